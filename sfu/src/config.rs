//! Server configuration: `sfu.toml`, overridden by command-line flags.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A STUN/TURN server offered to clients in `Link: rel="ice-server"` headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address (WHIP, WHEP, API, metrics, pages).
    pub http: SocketAddr,
    /// The one port that carries all media, over UDP and (ICE-TCP) TCP.
    pub media_port: u16,
    /// Local addresses the media port binds to (one UDP socket and one TCP listener each).
    pub media_bind: Vec<IpAddr>,
    /// Addresses advertised in ICE candidates (NAT, cloud). Empty: the bind addresses.
    pub public_ips: Vec<IpAddr>,
    /// HS256 secret for join tokens. `CLASSROOM_SECRET` overrides it.
    pub secret: Option<String>,
    pub ice_servers: Vec<IceServer>,
    /// Largest accepted SDP body.
    pub max_body_bytes: usize,
    /// How much sent media each subscriber keeps for retransmission (satellite RTTs need seconds).
    pub rtx_cache_ms: u64,
    /// Minimum spacing of keyframe requests to one publisher layer.
    pub keyframe_request_interval_ms: u64,
    /// A session that has not connected within this time is dropped.
    pub connect_timeout_ms: u64,
    /// Offer ICE-TCP candidates on the media port as well.
    pub ice_tcp: bool,
    /// Classrooms on stage at once (1 to 6).
    pub max_stage: usize,
    /// A lesson whose teacher has been gone this long ends by itself.
    pub teacher_timeout_s: u64,
    /// Teacher-console tiles rotate this often when there are more classrooms than tiles.
    pub tile_rotate_s: u64,
    /// Join a cluster of nodes (`[cluster]`); absent: this node serves alone.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: membership in a Redis directory and relays to other nodes over QUIC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster (e.g. `county-a-1`).
    pub node_id: String,
    /// Region tag (a county, a city): classrooms are placed on nodes of their region.
    pub region: String,
    /// `redis://host:port` of the directory.
    pub redis: String,
    /// UDP port of the QUIC relay endpoint.
    pub relay_port: u16,
    /// Address the relay endpoint binds; default: the first media bind address.
    pub relay_bind: Option<IpAddr>,
    /// Address other nodes dial for relays; default: the first advertised media address.
    pub relay_public: Option<IpAddr>,
    /// Base URL clients are redirected to (`http://host:port`); default: from `http`.
    pub public_url: Option<String>,
    /// Folder with `ca.pem`, `<node_id>.pem` and `<node_id>.key` (`sfu cluster-certs`).
    pub certs: std::path::PathBuf,
    /// Shared secret every node proves on connecting; `CLUSTER_SECRET` overrides it.
    pub secret: Option<String>,
    /// A node silent this long is gone (its rooms can move).
    pub ttl_ms: u64,
    pub heartbeat_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            region: "default".into(),
            redis: "redis://127.0.0.1:6379".into(),
            relay_port: 7802,
            relay_bind: None,
            relay_public: None,
            public_url: None,
            certs: "certs".into(),
            secret: None,
            ttl_ms: 2000,
            heartbeat_ms: 500,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: "127.0.0.1:7800".parse().expect("static addr"),
            media_port: 7801,
            media_bind: vec!["127.0.0.1".parse().expect("static addr")],
            public_ips: vec![],
            secret: None,
            ice_servers: vec![],
            max_body_bytes: 64 * 1024,
            rtx_cache_ms: 4000,
            keyframe_request_interval_ms: 500,
            connect_timeout_ms: 15_000,
            ice_tcp: true,
            max_stage: 1,
            teacher_timeout_s: 600,
            tile_rotate_s: 15,
            cluster: None,
        }
    }
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
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.media_bind.is_empty() {
            return Err(ConfigError::Invalid("media_bind is empty".into()));
        }
        if self.rtx_cache_ms < 3000 {
            return Err(ConfigError::Invalid(
                "rtx_cache_ms below 3000 cannot repair losses on satellite links".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid("max_body_bytes below 1024".into()));
        }
        if !(1..=crate::room::state::MAX_STAGE).contains(&self.max_stage) {
            return Err(ConfigError::Invalid(format!(
                "max_stage must be 1 to {}",
                crate::room::state::MAX_STAGE
            )));
        }
        if let Some(c) = &self.cluster {
            if c.node_id.is_empty()
                || c.node_id.len() > 64
                || !c
                    .node_id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            {
                return Err(ConfigError::Invalid(
                    "cluster node_id: 1 to 64 letters, digits, '-', '_' or '.'".into(),
                ));
            }
            if c.heartbeat_ms == 0 || c.ttl_ms < 2 * c.heartbeat_ms {
                return Err(ConfigError::Invalid(
                    "cluster ttl_ms must be at least twice heartbeat_ms".into(),
                ));
            }
        }
        Ok(())
    }

    /// Addresses to put in ICE candidates, one per bind address family.
    pub fn advertised_ips(&self) -> Vec<IpAddr> {
        if !self.public_ips.is_empty() {
            return self.public_ips.clone();
        }
        self.media_bind
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect()
    }

    pub fn room_rules(&self) -> crate::room::RoomRules {
        crate::room::RoomRules {
            max_stage: self.max_stage,
            teacher_timeout: Duration::from_secs(self.teacher_timeout_s),
            rotate_every: Duration::from_secs(self.tile_rotate_s.max(1)),
        }
    }

    pub fn rtx_cache(&self) -> Duration {
        Duration::from_millis(self.rtx_cache_ms)
    }

    pub fn keyframe_request_interval(&self) -> Duration {
        Duration::from_millis(self.keyframe_request_interval_ms)
    }

    /// `Link` header values for WHIP/WHEP responses.
    pub fn ice_server_links(&self) -> Vec<String> {
        self.ice_servers
            .iter()
            .map(|s| {
                let mut v = format!("<{}>; rel=\"ice-server\"", s.urls);
                if let Some(u) = &s.username {
                    v.push_str(&format!("; username=\"{u}\""));
                }
                if let Some(c) = &s.credential {
                    v.push_str(&format!(
                        "; credential=\"{c}\"; credential-type=\"password\""
                    ));
                }
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_and_rejects_unknown_fields() {
        let c = Config::from_toml(
            r#"
            http = "0.0.0.0:8000"
            media_port = 9000
            public_ips = ["203.0.113.7"]
            [[ice_servers]]
            urls = "stun:stun.example.org:3478"
            "#,
        )
        .unwrap();
        assert_eq!(c.media_port, 9000);
        assert_eq!(
            c.advertised_ips(),
            vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            c.ice_server_links(),
            vec!["<stun:stun.example.org:3478>; rel=\"ice-server\"".to_string()]
        );
        assert!(Config::from_toml("bogus = 1").is_err());
        assert!(Config::from_toml("media_port = \"x\"").is_err());
    }

    #[test]
    fn validation() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.rtx_cache_ms = 1000;
        assert!(c.validate().is_err());
    }
}
