use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sfu::auth::{Role, TokenKeys};
use sfu::config::Config;

#[derive(Parser)]
#[command(
    name = "sfu",
    version,
    about = "Selective forwarding unit for live synchronous classrooms"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the SFU (WHIP, WHEP, API, metrics, pages).
    Serve {
        /// HTTP listen address (default 127.0.0.1:7800).
        #[arg(long)]
        http: Option<SocketAddr>,
        /// The one media port, UDP and ICE-TCP (default 7801).
        #[arg(long)]
        media_port: Option<u16>,
        /// Local address for the media port; repeat for IPv4 and IPv6 (default 127.0.0.1).
        #[arg(long)]
        media_bind: Vec<IpAddr>,
        /// Address to advertise in ICE candidates (NAT, cloud); repeatable.
        #[arg(long)]
        public_ip: Vec<IpAddr>,
        /// Classrooms on stage at once, 1 to 6 (default 1).
        #[arg(long)]
        max_stage: Option<usize>,
        /// End a lesson whose teacher has been gone this long (default 10m).
        #[arg(long)]
        teacher_timeout: Option<humantime::Duration>,
        /// Configuration file (TOML); flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Join a cluster whose directory is this Redis (`redis://HOST:PORT`).
        #[arg(long)]
        cluster: Option<String>,
        /// This node's id in the cluster.
        #[arg(long)]
        node_id: Option<String>,
        /// This node's region tag (county): classrooms are placed on nodes of their region.
        #[arg(long)]
        region: Option<String>,
        /// UDP port of the QUIC relay between nodes (default 7802).
        #[arg(long)]
        relay_port: Option<u16>,
        /// Folder with the cluster's certificates (`sfu cluster-certs`; default ./certs).
        #[arg(long)]
        cluster_certs: Option<PathBuf>,
        /// Base URL other nodes redirect clients to (default http://<--http>).
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Make the certificates a cluster's relays use: a CA, and a certificate and key per node.
    ClusterCerts {
        /// Folder to write ca.pem, <node>.pem and <node>.key into.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
    },
    /// Print a join token.
    Token {
        #[arg(long)]
        room: String,
        /// teacher, classroom, observer or admin.
        #[arg(long)]
        role: String,
        /// Participant id, e.g. school and class.
        #[arg(long)]
        sub: String,
        /// Display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 2h, 45m.
        #[arg(long, default_value = "2h")]
        ttl: humantime::Duration,
        /// In a cluster: the node the lesson is taught from.
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::from_file(p)?),
        None => Ok(Config::default()),
    }
}

fn secret(config: &Config) -> anyhow::Result<String> {
    if let Ok(s) = std::env::var("CLASSROOM_SECRET") {
        if !s.is_empty() {
            return Ok(s);
        }
    }
    match &config.secret {
        Some(s) if !s.is_empty() => Ok(s.clone()),
        _ => bail!("no token secret: set CLASSROOM_SECRET or `secret` in the config file"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            http,
            media_port,
            media_bind,
            public_ip,
            max_stage,
            teacher_timeout,
            config,
            cluster,
            node_id,
            region,
            relay_port,
            cluster_certs,
            public_url,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,str0m=warn,is=warn,dimpl=warn".into()),
                )
                .init();
            let mut cfg = load_config(config.as_ref())?;
            if let Some(h) = http {
                cfg.http = h;
            }
            if let Some(p) = media_port {
                cfg.media_port = p;
            }
            if !media_bind.is_empty() {
                cfg.media_bind = media_bind;
            }
            if !public_ip.is_empty() {
                cfg.public_ips = public_ip;
            }
            if let Some(k) = max_stage {
                cfg.max_stage = k;
            }
            if let Some(t) = teacher_timeout {
                cfg.teacher_timeout_s = t.as_secs();
            }
            if cluster.is_some() || node_id.is_some() {
                let c = cfg.cluster.get_or_insert_with(Default::default);
                if let Some(v) = cluster {
                    c.redis = v;
                }
                if let Some(v) = node_id {
                    c.node_id = v;
                }
                if let Some(v) = region {
                    c.region = v;
                }
                if let Some(v) = relay_port {
                    c.relay_port = v;
                }
                if let Some(v) = cluster_certs {
                    c.certs = v;
                }
                if let Some(v) = public_url {
                    c.public_url = Some(v);
                }
                if c.node_id.is_empty() {
                    bail!("--cluster needs --node-id (this node's id in the cluster)");
                }
            }
            let secret = secret(&cfg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(sfu::server::run(cfg, &secret, shutdown_signal()))?;
            Ok(())
        }
        Cmd::ClusterCerts { out, nodes } => {
            let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
            sfu::cluster::certs::generate(&out, &names)
                .with_context(|| format!("writing certificates to {}", out.display()))?;
            println!(
                "wrote ca.pem and a certificate per node to {}",
                out.display()
            );
            Ok(())
        }
        Cmd::Token {
            room,
            role,
            sub,
            name,
            ttl,
            origin,
            config,
        } => {
            let cfg = load_config(config.as_ref())?;
            let keys = TokenKeys::new(&secret(&cfg)?)?;
            let role: Role = role.parse()?;
            let ttl: Duration = ttl.into();
            println!(
                "{}",
                keys.mint_for(&room, role, &sub, &name, ttl, origin.as_deref())?
            );
            Ok(())
        }
    }
}
