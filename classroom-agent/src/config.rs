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

/// The file as written: every value still text, checked and typed by [`AgentFile::parse`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    school: Option<String>,
    id: Option<String>,
    sfu: Option<String>,
    room: Option<String>,
    token: Option<String>,
    token_url: Option<String>,
    role: Option<String>,
    codec: Option<String>,
    max_kbps: Option<u64>,
    play: Option<String>,
    status: Option<String>,
    #[serde(default)]
    devices: RawDevices,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    video: Option<String>,
    audio: Option<String>,
    courseware: Option<String>,
    slide_seconds: Option<u64>,
}

/// The config file's settings, each already parsed the way its command-line option is.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AgentFile {
    /// The school's id in the timetable (shown in `/status` and the logs).
    pub school: Option<String>,
    /// This classroom's class id (or the teacher's id) in the timetable: picks its own token
    /// out of the scheduler's join answer at `token_url`.
    pub id: Option<String>,
    pub sfu: Option<url::Url>,
    pub room: Option<String>,
    pub token: Option<String>,
    /// Where to fetch the join token at start (the scheduler's
    /// `/api/plans/P/lessons/L/join`, or any URL answering a bare token or `{"token": ..}`).
    pub token_url: Option<String>,
    pub role: Option<Role>,
    pub codec: Option<VideoCodec>,
    pub max_kbps: Option<u64>,
    pub play: Option<PlayTarget>,
    /// `HOST:PORT` or `off`, as `--status` takes it.
    pub status: Option<String>,
    pub devices: Devices,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Devices {
    pub video: Option<VideoSource>,
    pub audio: Option<AudioSource>,
    pub courseware: Option<CoursewareSource>,
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
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        // One key's text, parsed as its option parses it.
        fn value<T>(
            path: &str,
            field: &'static str,
            v: Option<String>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, ConfigError> {
            v.map(|s| {
                parse(&s).map_err(|message| ConfigError::Value {
                    path: path.to_string(),
                    field,
                    value: s.clone(),
                    message,
                })
            })
            .transpose()
        }
        for (field, v) in [("room", &raw.room), ("token", &raw.token), ("id", &raw.id)] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(ConfigError::Value {
                    path: path.to_string(),
                    field,
                    value: String::new(),
                    message: "empty".into(),
                });
            }
        }
        if raw.token.is_some() && raw.token_url.is_some() {
            return Err(ConfigError::Invalid {
                path: path.to_string(),
                message: "give token or token_url, not both".into(),
            });
        }
        let url = |s: &str| url::Url::parse(s).map_err(|e| e.to_string());
        value(path, "token_url", raw.token_url.clone(), url)?;
        value(path, "status", raw.status.clone(), |s| {
            if s == "off" {
                return Ok(());
            }
            s.parse::<std::net::SocketAddr>()
                .map(|_| ())
                .map_err(|_| "expected HOST:PORT or off".to_string())
        })?;
        Ok(AgentFile {
            school: raw.school,
            id: raw.id,
            sfu: value(path, "sfu", raw.sfu, url)?,
            room: raw.room,
            token: raw.token,
            token_url: raw.token_url,
            role: value(path, "role", raw.role, parse_role)?,
            codec: value(path, "codec", raw.codec, |s| s.parse())?,
            max_kbps: raw.max_kbps,
            play: value(path, "play", raw.play, |s| s.parse())?,
            status: raw.status,
            devices: Devices {
                video: value(path, "devices.video", raw.devices.video, |s| s.parse())?,
                audio: value(path, "devices.audio", raw.devices.audio, |s| s.parse())?,
                courseware: value(path, "devices.courseware", raw.devices.courseware, |s| {
                    s.parse()
                })?,
                slide_seconds: raw.devices.slide_seconds,
            },
        })
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
        assert_eq!(
            f.devices.video,
            Some(VideoSource::V4l2("/dev/video0".into()))
        );
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
