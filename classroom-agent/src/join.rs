//! Fetching the join token from a URL at start (`token_url`): the scheduler's join answer for
//! a lesson, or any service that answers a bare token or `{"token": .., "room": ..}`. The
//! answer's reading is pure and unit-tested; the fetch retries with backoff, since the
//! scheduler may still be starting when the classroom PC boots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::backoff::Backoff;

/// What the answer gave: the token, and the room when it names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub token: String,
    pub room: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error("the answer is empty")]
    Empty,
    #[error("the answer is JSON without a token: expected \"token\" or \"participants\"")]
    NoToken,
    #[error("the join answer lists several classrooms: set `id` to one of {0}")]
    NeedId(String),
    #[error("the join answer has no participant {id:?} (it has {subs})")]
    NotListed { id: String, subs: String },
}

/// Reads a token URL's answer. `id` picks this classroom (or teacher) from a join answer's
/// `participants`.
pub fn read_answer(body: &str, id: Option<&str>) -> Result<Joined, AnswerError> {
    let body = body.trim();
    if body.is_empty() {
        return Err(AnswerError::Empty);
    }
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        // A bare token (a JWT is three base64url parts).
        return Ok(Joined {
            token: body.to_string(),
            room: None,
        });
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(token) = text(&json, "token") {
        return Ok(Joined {
            token,
            room: text(&json, "room"),
        });
    }
    let Some(list) = json.get("participants").and_then(Value::as_array) else {
        return Err(AnswerError::NoToken);
    };
    let subs = || {
        list.iter()
            .filter_map(|p| text(p, "sub"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(id) = id else {
        return Err(AnswerError::NeedId(subs()));
    };
    let me = list
        .iter()
        .find(|p| text(p, "sub").as_deref() == Some(id))
        .ok_or_else(|| AnswerError::NotListed {
            id: id.to_string(),
            subs: subs(),
        })?;
    Ok(Joined {
        token: text(me, "token").ok_or(AnswerError::NoToken)?,
        room: text(me, "room").or_else(|| text(&json, "room")),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {reason}")]
    Answer { url: String, reason: AnswerError },
    #[error("{url}: HTTP {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
    #[error("stopped before the token came")]
    Stopped,
}

/// Fetches the token, retrying unreachable servers and 5xx answers with backoff until `stop`.
/// A 4xx answer or an answer without this classroom's token is a mistake in the setup, and
/// ends the start with the reason.
pub fn fetch(url: &str, id: Option<&str>, stop: &AtomicBool) -> Result<Joined, FetchError> {
    // Short timeouts: a SIGTERM waits for the request in flight.
    let http = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| FetchError::Refused {
            url: url.to_string(),
            status: 0,
            body: e.to_string(),
        })?;
    let mut backoff = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        std::process::id() as u64,
    );
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(FetchError::Stopped);
        }
        match http.get(url).send() {
            Ok(r) if r.status().is_success() => match r.text() {
                Ok(body) => {
                    return read_answer(&body, id).map_err(|reason| FetchError::Answer {
                        url: url.to_string(),
                        reason,
                    })
                }
                Err(e) => tracing::warn!("token: reading the answer of {url}: {e}; trying again"),
            },
            // Timed out or throttled: worth another try, unlike the other 4xx.
            Ok(r) if matches!(r.status().as_u16(), 408 | 429) => {
                tracing::warn!("token: {url} answered {}; trying again", r.status())
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status().as_u16();
                let body: String = r.text().unwrap_or_default().chars().take(300).collect();
                return Err(FetchError::Refused {
                    url: url.to_string(),
                    status,
                    body,
                });
            }
            Ok(r) => tracing::warn!("token: {url} answered {}; trying again", r.status()),
            Err(e) => tracing::warn!("token: cannot reach {url}: {e}; trying again"),
        }
        // Sleep in short steps so that SIGTERM is not held up.
        let until = std::time::Instant::now() + backoff.next_delay();
        while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOIN: &str = r#"{"lesson":"L1","room":"r-1","weekday":1,"participants":[
        {"sub":"z01-eng","role":"teacher","room":"r-1","token":"tt","link":"x"},
        {"sub":"p011-g4","role":"classroom","room":"r-1","token":"t11","link":"y"},
        {"sub":"p019-g4","role":"classroom","room":"r-1","token":"t19","link":"z"}]}"#;

    #[test]
    fn a_join_answer_gives_this_classrooms_token_and_room() {
        let j = read_answer(JOIN, Some("p019-g4")).unwrap();
        assert_eq!(j.token, "t19");
        assert_eq!(j.room.as_deref(), Some("r-1"));
        assert_eq!(read_answer(JOIN, Some("z01-eng")).unwrap().token, "tt");
    }

    #[test]
    fn a_join_answer_without_this_classroom_says_who_is_listed() {
        let e = read_answer(JOIN, Some("p099-g4")).unwrap_err();
        assert!(e.to_string().contains("p099-g4"), "{e}");
        assert!(e.to_string().contains("p011-g4, p019-g4"), "{e}");
        assert!(matches!(
            read_answer(JOIN, None),
            Err(AnswerError::NeedId(_))
        ));
    }

    #[test]
    fn bare_tokens_and_token_objects_are_read() {
        let j = read_answer("eyJhbGciOi.eyJzdWIi.sig\n", None).unwrap();
        assert_eq!(j.token, "eyJhbGciOi.eyJzdWIi.sig");
        assert_eq!(j.room, None);
        let j = read_answer(r#"{"token":"abc","room":"r9"}"#, Some("ignored")).unwrap();
        assert_eq!((j.token.as_str(), j.room.as_deref()), ("abc", Some("r9")));
        assert_eq!(read_answer("  ", None), Err(AnswerError::Empty));
        assert_eq!(
            read_answer(r#"{"error":"x"}"#, None),
            Err(AnswerError::NoToken)
        );
    }
}
