//! WHIP/WHEP over HTTP: POST the offer, keep the session's Location, restart its ICE with a
//! PATCH (RFC 9725 section 4.4.1), DELETE it on leave.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use url::Url;

use crate::join::FetchError;

#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("cannot reach the SFU: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the SFU answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the SFU answered 201 without a usable Location header")]
    NoLocation,
    #[error("bad SFU URL: {0}")]
    Url(#[from] url::ParseError),
}

impl WhipError {
    /// Errors that retrying cannot fix (a bad token, a forbidden role, an offer the SFU
    /// will never take). Server errors and conflicts may clear up.
    pub fn is_permanent(&self) -> bool {
        matches!(self, WhipError::Status { status, .. }
            if matches!(status, 400 | 401 | 403 | 404 | 415 | 422))
    }

    /// The SFU did not take the token (expired, or signed with another key): a new token
    /// may help, where one is fetched from a URL.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, WhipError::Status { status: 401, .. })
    }
}

/// Which endpoint: publish (WHIP) or play (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Whip,
    Whep,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Whip => "whip",
            Endpoint::Whep => "whep",
        }
    }
}

/// A created session.
#[derive(Debug, Clone)]
pub struct Created {
    pub location: Url,
    pub answer: String,
}

/// Where a new token comes from when the SFU refuses the one in use: the token URL (and the
/// id that picks this classroom from a join answer) the first one was fetched from.
#[derive(Debug, Clone)]
struct TokenSource {
    url: String,
    id: Option<String>,
}

/// Clones share the token, so the WHIP and WHEP sessions both use a renewed one.
#[derive(Debug, Clone)]
pub struct WhipClient {
    http: Client,
    sfu: Url,
    token: Arc<Mutex<String>>,
    source: Option<TokenSource>,
}

impl WhipClient {
    pub fn new(sfu: Url, token: String) -> Result<Self, WhipError> {
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()?;
        Ok(WhipClient {
            http,
            sfu,
            token: Arc::new(Mutex::new(token)),
            source: None,
        })
    }

    /// Renews the token from `url` when the SFU refuses it: a lesson's token expires, and a
    /// classroom left running from one day to the next (or a long outage) would otherwise
    /// stay out of the lesson until someone restarts it.
    pub fn renewing_from(mut self, url: String, id: Option<String>) -> Self {
        self.source = Some(TokenSource { url, id });
        self
    }

    fn bearer(&self) -> String {
        format!(
            "Bearer {}",
            self.token.lock().unwrap_or_else(|e| e.into_inner())
        )
    }

    /// Fetches a new token after the SFU refused this one. `Ok(false)`: nothing to renew from,
    /// or the URL answered the same token, so another try would be refused again.
    pub fn renew_token(&self, stop: &AtomicBool) -> Result<bool, FetchError> {
        let Some(src) = &self.source else {
            return Ok(false);
        };
        let joined = crate::join::fetch(&src.url, src.id.as_deref(), stop)?;
        let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if *token == joined.token {
            return Ok(false);
        }
        *token = joined.token;
        Ok(true)
    }

    /// The SFU's host, where its media port is reached too.
    pub fn sfu(&self) -> &Url {
        &self.sfu
    }

    pub fn endpoint(&self, kind: Endpoint, room: &str) -> Result<Url, WhipError> {
        Ok(self.sfu.join(&format!("/{}/{}", kind.as_str(), room))?)
    }

    pub fn create(&self, kind: Endpoint, room: &str, offer: &str) -> Result<Created, WhipError> {
        let url = self.endpoint(kind, room)?;
        let resp = self
            .http
            .post(url.clone())
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer.to_string())
            .send()?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.text()?;
        if status != 201 {
            return Err(WhipError::Status {
                status,
                body: body.trim().chars().take(300).collect(),
            });
        }
        let location = location
            .and_then(|l| url.join(&l).ok())
            .ok_or(WhipError::NoLocation)?;
        Ok(Created {
            location,
            answer: body,
        })
    }

    /// Restarts the session's ICE: sends this side's new credentials as a
    /// `trickle-ice-sdpfrag` and returns the SFU's fragment with its new ones. A session the
    /// SFU no longer knows answers 404 (then only a new session helps).
    pub fn restart_ice(&self, location: &Url, ufrag: &str, pwd: &str) -> Result<String, WhipError> {
        let frag = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
        let resp = self
            .http
            .patch(location.clone())
            .header(AUTHORIZATION, self.bearer())
            .header(CONTENT_TYPE, SDPFRAG)
            .header("if-match", "*")
            .timeout(Duration::from_secs(3))
            .body(frag)
            .send()?;
        let status = resp.status().as_u16();
        let body = resp.text()?;
        if status != 200 {
            return Err(WhipError::Status {
                status,
                body: body.trim().chars().take(300).collect(),
            });
        }
        Ok(body)
    }

    /// Ends a session. A session the SFU no longer knows (404) counts as ended.
    pub fn delete(&self, location: &Url) -> Result<(), WhipError> {
        let resp = self
            .http
            .delete(location.clone())
            .header(AUTHORIZATION, self.bearer())
            .timeout(Duration::from_secs(3))
            .send()?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            status => Err(WhipError::Status {
                status,
                body: resp.text().unwrap_or_default(),
            }),
        }
    }
}

const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// The ICE credentials (`a=ice-ufrag`, `a=ice-pwd`) in an SDP or an SDP fragment.
pub fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(str::to_string))
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// `answer` with its ICE credentials replaced: the answer to an ICE-restart offer is the
/// session's answer with the SFU's new credentials (nothing else changes).
pub fn with_credentials(answer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        if body.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{ufrag}{ending}"));
        } else if body.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{pwd}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Points the answer's ICE candidates at `via` (a relay in front of the SFU, such as the
/// link emulator): the first UDP candidate keeps its line with `via`'s address, the others
/// are dropped.
pub fn redirect_candidates(answer: &str, via: std::net::SocketAddr) -> String {
    let mut out = String::with_capacity(answer.len());
    let mut done = false;
    for line in answer.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let Some(rest) = body.strip_prefix("a=candidate:") else {
            out.push_str(line);
            continue;
        };
        let mut f: Vec<String> = rest.split(' ').map(str::to_string).collect();
        if done || f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
            continue;
        }
        f[4] = via.ip().to_string();
        f[5] = via.port().to_string();
        out.push_str(&format!("a=candidate:{}{ending}", f.join(" ")));
        done = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_point_at_the_relay() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=candidate:1 1 udp 2130706175 127.0.0.1 7801 typ host\r\n\
            a=candidate:2 1 tcp 2130706175 127.0.0.1 7801 typ host tcptype passive\r\n\
            a=candidate:3 1 udp 2130706175 10.0.0.2 7801 typ host\r\n\
            a=end-of-candidates\r\n";
        let out = redirect_candidates(answer, "127.0.0.1:40000".parse().unwrap());
        assert!(out.contains("a=candidate:1 1 udp 2130706175 127.0.0.1 40000 typ host\r\n"));
        assert_eq!(out.matches("a=candidate:").count(), 1);
        assert!(out.contains("a=end-of-candidates\r\n"));
    }

    #[test]
    fn restart_answers_carry_the_new_credentials_only() {
        let answer = "v=0\r\na=ice-lite\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=ice-ufrag:old1\r\na=ice-pwd:oldpass1\r\na=mid:0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpass1\r\n";
        let frag = "a=ice-lite\r\na=ice-ufrag:new2\r\na=ice-pwd:newpass2\r\n";
        let (u, p) = ice_credentials(frag).unwrap();
        assert_eq!((u.as_str(), p.as_str()), ("new2", "newpass2"));
        let out = with_credentials(answer, &u, &p);
        assert_eq!(out.matches("a=ice-ufrag:new2\r\n").count(), 2);
        assert_eq!(out.matches("a=ice-pwd:newpass2\r\n").count(), 2);
        assert!(!out.contains("old"));
        assert_eq!(out.len(), answer.len());
        assert_eq!(ice_credentials("a=ice-ufrag:x\r\n"), None);
    }

    #[test]
    fn endpoints_and_permanence() {
        let c = WhipClient::new(
            Url::parse("http://127.0.0.1:7800/ignored").unwrap(),
            "t".into(),
        )
        .unwrap();
        assert_eq!(
            c.endpoint(Endpoint::Whep, "r1").unwrap().as_str(),
            "http://127.0.0.1:7800/whep/r1"
        );
        let e = |status| WhipError::Status {
            status,
            body: String::new(),
        };
        assert!(e(403).is_permanent());
        assert!(!e(503).is_permanent());
        assert!(!e(409).is_permanent());
        // Only a refused token is worth renewing, and only from a token URL.
        assert!(e(401).is_unauthorized());
        assert!(!e(403).is_unauthorized());
        assert!(!c.renew_token(&AtomicBool::new(false)).unwrap());
    }
}
