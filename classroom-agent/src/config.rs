//! The agent's config file (TOML): what a school's IT staff write once for a classroom PC —
//! which school and class it is, the SFU, the room and its token (or where to fetch the
//! token), the devices. Every key is optional and the command line wins over the file; see
//! `deploy/agent.toml` for a commented example. Pure: parsing and checking only.

use std::path::Path;

use serde::Deserialize;

use crate::capture::{AudioSource, CoursewareSource, VideoSource};
use crate::frame::VideoCodec;
use crate::layers::Role;
use crate::playback::PlayTarget;

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The school's id in the timetable (shown in `/status` and the logs).
    pub school: Option<String>,
    /// This classroom's class id (or the teacher's id) in the timetable: picks its own token
    /// out of the scheduler's join answer at `token_url`.
    pub id: Option<String>,
    pub sfu: Option<String>,
    pub room: Option<String>,
    pub token: Option<String>,
    /// Where to fetch the join token at start (the scheduler's
    /// `/api/plans/P/lessons/L/join`, or any URL answering a bare token or `{"token": ..}`).
    pub token_url: Option<String>,
    pub role: Option<String>,
    pub codec: Option<String>,
    pub max_kbps: Option<u64>,
    pub play: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub devices: Devices,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    pub video: Option<String>,
    pub audio: Option<String>,
    pub courseware: Option<String>,
    pub slide_seconds: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field} = {value:?}: {message}")]
    Value {
        path: String,
        field: &'static str,
        value: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl AgentFile {
    /// Reads and checks the file at `path`.
    pub fn read(path: &Path) -> Result<AgentFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks TOML text; `path` names it in errors. A bad value is refused here,
    /// with its key, rather than when the lesson starts.
    pub fn parse(text: &str, path: &str) -> Result<AgentFile, ConfigError> {
        let file: AgentFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        file.check(path)?;
        Ok(file)
    }

    fn check(&self, path: &str) -> Result<(), ConfigError> {
        fn value<T>(
            path: &str,
            field: &'static str,
            v: &Option<String>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<(), ConfigError> {
            match v {
                Some(s) => parse(s).map(|_| ()).map_err(|message| ConfigError::Value {
                    path: path.to_string(),
                    field,
                    value: s.clone(),
                    message,
                }),
                None => Ok(()),
            }
        }
        let url = |s: &str| url::Url::parse(s).map_err(|e| e.to_string());
        value(path, "sfu", &self.sfu, url)?;
        value(path, "token_url", &self.token_url, url)?;
        value(path, "role", &self.role, parse_role)?;
        value(path, "codec", &self.codec, |s| s.parse::<VideoCodec>())?;
        value(path, "play", &self.play, |s| s.parse::<PlayTarget>())?;
        value(path, "status", &self.status, |s| {
            if s == "off" {
                return Ok(());
            }
            s.parse::<std::net::SocketAddr>()
                .map(|_| ())
                .map_err(|_| "expected HOST:PORT or off".to_string())
        })?;
        value(path, "devices.video", &self.devices.video, |s| {
            s.parse::<VideoSource>()
        })?;
        value(path, "devices.audio", &self.devices.audio, |s| {
            s.parse::<AudioSource>()
        })?;
        value(path, "devices.courseware", &self.devices.courseware, |s| {
            s.parse::<CoursewareSource>()
        })?;
        for (field, v) in [
            ("room", &self.room),
            ("token", &self.token),
            ("id", &self.id),
        ] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(ConfigError::Value {
                    path: path.to_string(),
                    field,
                    value: String::new(),
                    message: "empty".into(),
                });
            }
        }
        if self.token.is_some() && self.token_url.is_some() {
            return Err(ConfigError::Invalid {
                path: path.to_string(),
                message: "give token or token_url, not both".into(),
            });
        }
        Ok(())
    }
}

/// `teacher` or `classroom`, as on the command line.
pub fn parse_role(s: &str) -> Result<Role, String> {
    <Role as clap::ValueEnum>::from_str(s, true)
        .map_err(|_| "expected teacher or classroom".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let f = AgentFile::parse(include_str!("../deploy/agent.toml"), "agent.toml").unwrap();
        assert!(f.school.is_some() && f.id.is_some());
        assert!(f.token_url.is_some() && f.token.is_none());
        assert_eq!(f.devices.video.as_deref(), Some("v4l2:/dev/video0"));
    }

    #[test]
    fn every_key_is_optional() {
        assert_eq!(
            AgentFile::parse("", "a.toml").unwrap(),
            AgentFile::default()
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e = AgentFile::parse("role = \"pupil\"\n", "/etc/a.toml").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/etc/a.toml") && s.contains("role") && s.contains("pupil"),
            "{s}"
        );

        let e = AgentFile::parse("[devices]\nvideo = \"hdmi\"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("devices.video"), "{e}");

        // An unknown key (a typo) is refused with its line rather than ignored.
        let e = AgentFile::parse("school = \"p1\"\nromm = \"r\"\n", "a.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("romm") && s.contains("line 2"), "{s}");

        let e = AgentFile::parse("sfu = \"not a url\"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("sfu"), "{e}");

        let e = AgentFile::parse("status = \"7990\"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("HOST:PORT"), "{e}");

        let e =
            AgentFile::parse("token = \"a\"\ntoken_url = \"http://x/\"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");

        let e = AgentFile::parse("room = \" \"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("room"), "{e}");

        let e = AgentFile::parse("max_kbps = \"lots\"\n", "a.toml").unwrap_err();
        assert!(e.to_string().contains("max_kbps"), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let e = AgentFile::read(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/agent.toml"));
    }
}
