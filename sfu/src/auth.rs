//! Join tokens: JWT HS256 signed with the classroom secret shared by the SFU and the scheduler.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a participant may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Teacher,
    Classroom,
    Observer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Teacher => "teacher",
            Role::Classroom => "classroom",
            Role::Observer => "observer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "teacher" => Ok(Role::Teacher),
            "classroom" => Ok(Role::Classroom),
            "observer" => Ok(Role::Observer),
            "admin" => Ok(Role::Admin),
            other => Err(AuthError::UnknownRole(other.to_string())),
        }
    }
}

/// Claims of a join token (DESIGN.md, "Tokens").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub name: String,
    pub room: String,
    pub role: Role,
    pub exp: u64,
    /// The cluster node the lesson should be taught from (its origin), when the scheduler
    /// names one; nodes without a cluster ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token is for room {token_room:?}, not {room:?}")]
    WrongRoom { token_room: String, room: String },
    #[error("role {have} may not {action}")]
    Forbidden { have: Role, action: &'static str },
    #[error("unknown role {0:?} (teacher, classroom, observer, admin)")]
    UnknownRole(String),
    #[error("the signing secret is empty")]
    EmptySecret,
}

impl AuthError {
    /// 401 for a token that does not prove who you are, 403 for one that proves it but forbids this.
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            AuthError::WrongRoom { .. } | AuthError::Forbidden { .. }
        )
    }
}

/// Signs and verifies tokens with one shared secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    pub fn new(secret: &str) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::EmptySecret);
        }
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    pub fn mint(
        &self,
        room: &str,
        role: Role,
        sub: &str,
        name: &str,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        self.mint_for(room, role, sub, name, ttl, None)
    }

    /// A token that also names the cluster node the lesson is taught from.
    pub fn mint_for(
        &self,
        room: &str,
        role: Role,
        sub: &str,
        name: &str,
        ttl: Duration,
        origin: Option<&str>,
    ) -> Result<String, AuthError> {
        let claims = Claims {
            sub: sub.to_string(),
            name: name.to_string(),
            room: room.to_string(),
            role,
            exp: unix_now() + ttl.as_secs(),
            origin: origin.map(str::to_string),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Verifies signature and expiry (no leeway: an expired token is expired).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(AuthError::Expired),
                _ => Err(AuthError::Invalid(e.to_string())),
            },
        }
    }

    /// Verifies the token and that it belongs to `room`.
    pub fn verify_for_room(&self, token: Option<&str>, room: &str) -> Result<Claims, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let claims = self.verify(token)?;
        if claims.room != room && claims.role != Role::Admin {
            return Err(AuthError::WrongRoom {
                token_room: claims.room,
                room: room.to_string(),
            });
        }
        Ok(claims)
    }
}

/// Pulls the token out of an `Authorization: Bearer ...` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
        Some(token.trim())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify_round_trip() {
        let keys = TokenKeys::new("s3cret").unwrap();
        let t = keys
            .mint(
                "r1",
                Role::Teacher,
                "school-1",
                "王老师",
                Duration::from_secs(60),
            )
            .unwrap();
        let c = keys.verify_for_room(Some(&t), "r1").unwrap();
        assert_eq!(c.sub, "school-1");
        assert_eq!(c.name, "王老师");
        assert_eq!(c.role, Role::Teacher);
    }

    #[test]
    fn wrong_secret_room_and_expiry() {
        let keys = TokenKeys::new("a").unwrap();
        let other = TokenKeys::new("b").unwrap();
        let t = keys
            .mint("r1", Role::Classroom, "c", "", Duration::from_secs(60))
            .unwrap();
        assert!(matches!(other.verify(&t), Err(AuthError::Invalid(_))));
        let e = keys.verify_for_room(Some(&t), "r2").unwrap_err();
        assert!(e.is_forbidden());
        assert_eq!(keys.verify_for_room(None, "r1"), Err(AuthError::Missing));
        let expired = keys
            .mint("r1", Role::Classroom, "c", "", Duration::ZERO)
            .unwrap();
        // exp == now; with no leeway it is rejected once the second has passed.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(keys.verify(&expired), Err(AuthError::Expired));
        assert!(matches!(
            keys.verify("not.a.jwt"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn admin_token_works_in_any_room() {
        let keys = TokenKeys::new("a").unwrap();
        let t = keys
            .mint("ops", Role::Admin, "root", "", Duration::from_secs(60))
            .unwrap();
        assert!(keys.verify_for_room(Some(&t), "any").is_ok());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
        assert!("nobody".parse::<Role>().is_err());
    }
}
