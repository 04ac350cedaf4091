//! Join tokens for a lesson's room: JWT HS256 with the SFU's claims (sfu/src/auth.rs), signed with
//! the shared `CLASSROOM_SECRET`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::Lesson;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Teacher,
    Classroom,
    Observer,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub name: String,
    pub room: String,
    pub role: Role,
    pub exp: u64,
    /// The SFU node (in a cluster) the lesson is taught from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the signing secret is empty")]
    EmptySecret,
    #[error("token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("class {0:?} does not take part in this lesson")]
    NotInLesson(String),
}

/// A token for one participant of a lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub sub: String,
    pub role: Role,
    pub room: String,
    pub token: String,
}

pub struct Minter {
    enc: EncodingKey,
    dec: DecodingKey,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Minter {
    pub fn new(secret: &str) -> Result<Self, TokenError> {
        if secret.is_empty() {
            return Err(TokenError::EmptySecret);
        }
        Ok(Minter {
            enc: EncodingKey::from_secret(secret.as_bytes()),
            dec: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    pub fn mint(
        &self,
        room: &str,
        role: Role,
        sub: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.mint_for(room, role, sub, name, ttl, None)
    }

    /// A token naming the SFU node the lesson is taught from (`origin`), for a cluster.
    pub fn mint_for(
        &self,
        room: &str,
        role: Role,
        sub: &str,
        name: &str,
        ttl: Duration,
        origin: Option<&str>,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            sub: sub.into(),
            name: name.into(),
            room: room.into(),
            role,
            exp: now() + ttl.as_secs(),
            origin: origin.map(str::to_string),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.enc,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        Ok(jsonwebtoken::decode::<Claims>(token, &self.dec, &v)?.claims)
    }

    /// The teacher's token and one classroom token per receiving class (the host class, when
    /// there is one, joins as a classroom too: its camera is the lesson's local view).
    pub fn lesson_tokens(
        &self,
        lesson: &Lesson,
        ttl: Duration,
        origin: Option<&str>,
    ) -> Result<Vec<JoinToken>, TokenError> {
        let mut out = vec![JoinToken {
            sub: lesson.teacher.clone(),
            role: Role::Teacher,
            room: lesson.room.clone(),
            token: self.mint_for(
                &lesson.room,
                Role::Teacher,
                &lesson.teacher,
                &lesson.teacher,
                ttl,
                origin,
            )?,
        }];
        for class in lesson.host_class.iter().chain(&lesson.receivers) {
            out.push(JoinToken {
                sub: class.clone(),
                role: Role::Classroom,
                room: lesson.room.clone(),
                token: self.mint(&lesson.room, Role::Classroom, class, class, ttl)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_sfu_claims() {
        let m = Minter::new("s3cret").unwrap();
        let t = m
            .mint(
                "room-1",
                Role::Classroom,
                "p1-c1",
                "点1",
                Duration::from_secs(60),
            )
            .unwrap();
        let c = m.verify(&t).unwrap();
        assert_eq!(
            (c.room.as_str(), c.role, c.sub.as_str()),
            ("room-1", Role::Classroom, "p1-c1")
        );
        // The claims serialize exactly as the SFU expects them.
        let v: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(v["role"], "classroom");
        assert!(Minter::new("other").unwrap().verify(&t).is_err());
        assert!(Minter::new("").is_err());
    }
}
