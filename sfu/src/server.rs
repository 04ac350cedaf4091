//! Starting and stopping the whole SFU: media loop thread plus HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use crate::auth::TokenKeys;
use crate::cluster::node::{tls_in, ClusterNode, ClusterSettings};
use crate::config::{ClusterConfig, Config};
use crate::http::{router, AppState};
use crate::media::event_loop::{LoopSettings, MediaLoop, MediaSockets};
use crate::media::session::RtcSettings;
use crate::media::Command;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding the media port {port}: {source}")]
    MediaBind { port: u16, source: std::io::Error },
    #[error("binding HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("media loop: {0}")]
    Media(std::io::Error),
    #[error("{0}")]
    Cluster(#[from] crate::cluster::node::ClusterError),
}

/// Runs the SFU until `shutdown` resolves, then closes every session and returns.
pub async fn run(
    config: Config,
    secret: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.validate()?;
    let keys = TokenKeys::new(secret)?;
    let advertised = config.advertised_ips();
    let advertise = move |bound: SocketAddr| {
        advertised
            .iter()
            .find(|ip| ip.is_ipv4() == bound.is_ipv4())
            .map(|ip| SocketAddr::new(*ip, bound.port()))
            .unwrap_or(bound)
    };
    let sockets = MediaSockets::bind(
        &config.media_bind,
        config.media_port,
        config.ice_tcp,
        advertise,
    )
    .map_err(|source| ServerError::MediaBind {
        port: config.media_port,
        source,
    })?;
    let rtc = Arc::new(RtcSettings {
        udp_candidates: sockets.udp_candidates(),
        tcp_candidates: sockets.tcp_candidates(),
        rtx_cache: config.rtx_cache(),
    });
    let metrics = Arc::new(Metrics::new());
    let (media_loop, media) = MediaLoop::new(
        sockets,
        metrics.clone(),
        LoopSettings {
            keyframe_interval: config.keyframe_request_interval(),
            connect_timeout: std::time::Duration::from_millis(config.connect_timeout_ms),
            room_rules: config.room_rules(),
        },
    )
    .map_err(ServerError::Media)?;
    let media_thread = std::thread::Builder::new()
        .name("media-loop".into())
        .spawn(move || media_loop.run())
        .map_err(ServerError::Media)?;

    let cluster = match &config.cluster {
        Some(c) => {
            let settings = cluster_settings(&config, c, secret);
            match ClusterNode::start(settings, media.clone(), metrics.clone()).await {
                Ok(n) => Some(n),
                Err(e) => {
                    let _ = media.send(Command::Shutdown);
                    let _ = tokio::task::spawn_blocking(move || media_thread.join()).await;
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    let listener =
        TcpListener::bind(config.http)
            .await
            .map_err(|source| ServerError::HttpBind {
                addr: config.http,
                source,
            })?;
    info!(
        http = %config.http,
        media = ?rtc.udp_candidates,
        ice_tcp = ?rtc.tcp_candidates,
        "SFU ready"
    );
    let state = AppState {
        keys,
        media: media.clone(),
        rtc,
        metrics,
        config: Arc::new(config),
        cluster: cluster.clone(),
    };
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    info!("HTTP stopped; closing sessions");
    if let Some(c) = &cluster {
        // Other nodes take this node's rooms over at once instead of after the TTL.
        c.leave().await;
    }
    let _ = media.send(Command::Shutdown);
    let _ = tokio::task::spawn_blocking(move || media_thread.join()).await;
    served.map_err(ServerError::Http)
}

/// The cluster settings of this node from its configuration.
fn cluster_settings(config: &Config, c: &ClusterConfig, token_secret: &str) -> ClusterSettings {
    let bind_ip = c
        .relay_bind
        .or_else(|| config.media_bind.first().copied())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let public_ip = c
        .relay_public
        .or_else(|| config.advertised_ips().first().copied())
        .unwrap_or(bind_ip);
    let secret = std::env::var("CLUSTER_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| c.secret.clone())
        // One secret for a small deployment: the token secret is shared by every node anyway.
        .unwrap_or_else(|| token_secret.to_string());
    ClusterSettings {
        node_id: c.node_id.clone(),
        region: c.region.clone(),
        redis: c.redis.clone(),
        relay_bind: SocketAddr::new(bind_ip, c.relay_port),
        relay_advertise: SocketAddr::new(public_ip, c.relay_port),
        public_http: c
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.http)),
        tls: tls_in(&c.certs, &c.node_id),
        secret,
        ttl: std::time::Duration::from_millis(c.ttl_ms),
        heartbeat: std::time::Duration::from_millis(c.heartbeat_ms),
    }
}
