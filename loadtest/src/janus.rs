//! Janus side by side: the same broadcast through Janus's Streaming plugin (`--target janus`).
//!
//! The load generator starts Janus itself with a configuration of its own (a temporary folder:
//! only the Streaming plugin and the HTTP transport, HTTP on 127.0.0.1, ICE-lite, no session
//! timeout) and one mountpoint: Opus on one port and VP8 simulcast on three (`l`, `m`, `h`),
//! fed by the teacher over plain RTP on 127.0.0.1. Each classroom watches it over Janus's HTTP
//! API (create, attach, watch, start with the answer, configure the substream).
//!
//! Janus never gathers loopback candidates, so it needs a local non-loopback address for its
//! peer connections: `loadtest/compare.sh` makes one in a network namespace it creates (a veth
//! pair), which keeps the whole run off the machine's real interfaces.

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

/// How to start Janus.
#[derive(Debug, Clone)]
pub struct JanusConfig {
    /// The `janus` executable.
    pub bin: PathBuf,
    /// Janus's plugin and transport libraries (`.../janus` with `plugins/` and `transports/`);
    /// `None` looks in the usual Debian and source-install places.
    pub lib_dir: Option<PathBuf>,
    /// The local, non-loopback address Janus's peer connections use.
    pub ip: IpAddr,
}

/// The ports the teacher feeds: audio, then video substreams 0, 1, 2 (low to high).
#[derive(Debug, Clone, Copy)]
pub struct MountpointPorts {
    pub audio: SocketAddr,
    pub video: [SocketAddr; 3],
}

/// The mountpoint every classroom watches.
pub const MOUNTPOINT: u64 = 1;

/// A running Janus; dropping it stops it (SIGTERM, then SIGKILL after 5 s).
pub struct JanusServer {
    child: Child,
    dir: PathBuf,
    pub http_base: String,
    pub ports: MountpointPorts,
    pub ip: IpAddr,
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find_lib_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|t| Path::new("/usr/lib").join(t).join("janus"))
        .collect();
    candidates.push("/usr/lib/janus".into());
    candidates.push("/opt/janus/lib/janus".into());
    candidates
        .into_iter()
        .find(|d| d.join("plugins/libjanus_streaming.so").exists())
}

/// Janus's configuration files, as (file name, contents); `debug_level` is Janus's log level.
pub fn config_files(
    dir: &Path,
    ip: IpAddr,
    http_port: u16,
    ports: &MountpointPorts,
    debug_level: u8,
) -> Vec<(&'static str, String)> {
    let d = dir.display();
    let janus = format!(
        r#"general: {{
  configs_folder = "{d}/conf"
  plugins_folder = "{d}/plugins"
  transports_folder = "{d}/transports"
  events_folder = "{d}/none"
  loggers_folder = "{d}/none"
  debug_level = {debug_level}
  session_timeout = 0
}}
media: {{
  rtp_port_range = "20000-40000"
}}
nat: {{
  ice_lite = true
  ice_enforce_list = "{ip}"
  ignore_mdns = true
}}
plugins: {{}}
transports: {{}}
"#
    );
    let http = format!(
        r#"general: {{
  json = "plain"
  base_path = "/janus"
  http = true
  port = {http_port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{
  admin_http = false
}}
"#
    );
    let [v0, v1, v2] = ports.video.map(|a| a.port());
    let streaming = format!(
        r#"general: {{
  events = false
}}
lesson: {{
  type = "rtp"
  id = {MOUNTPOINT}
  description = "loadtest lesson"
  media = (
    {{ type = "audio" mid = "a" label = "teacher audio" port = {a} iface = "127.0.0.1" pt = 111 codec = "opus" }},
    {{ type = "video" mid = "v" label = "teacher camera" port = {v0} port2 = {v1} port3 = {v2} simulcast = true iface = "127.0.0.1" pt = 96 codec = "vp8" }}
  )
}}
"#,
        a = ports.audio.port()
    );
    vec![
        ("janus.jcfg", janus),
        ("janus.transport.http.jcfg", http),
        ("janus.plugin.streaming.jcfg", streaming),
    ]
}

impl JanusServer {
    /// Writes the configuration, starts Janus and waits for its HTTP API.
    pub async fn start(cfg: &JanusConfig) -> anyhow::Result<JanusServer> {
        if cfg.ip.is_loopback() || cfg.ip.is_unspecified() {
            bail!(
                "--janus-ip {}: Janus gathers no loopback candidates; give it a local \
                 non-loopback address (loadtest/compare.sh makes one in a network namespace)",
                cfg.ip
            );
        }
        UdpSocket::bind((cfg.ip, 0))
            .with_context(|| format!("--janus-ip {} is not an address of this host", cfg.ip))?;
        let lib = cfg.lib_dir.clone().or_else(find_lib_dir).ok_or_else(|| {
            anyhow!("Janus's plugins not found (install the `janus` package or pass --janus-lib)")
        })?;
        let dir = std::env::temp_dir().join(format!("loadtest-janus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["conf", "plugins", "transports", "none"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        for (sub, file) in [
            ("plugins", "libjanus_streaming.so"),
            ("transports", "libjanus_http.so"),
        ] {
            let src = lib.join(sub).join(file);
            if !src.exists() {
                bail!("{} is missing", src.display());
            }
            std::os::unix::fs::symlink(&src, dir.join(sub).join(file))?;
        }
        let ports = MountpointPorts {
            audio: SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
            video: [
                SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
                SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
                SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
            ],
        };
        let http_port = free_tcp_port()?;
        // more of Janus's log, for looking into a run
        let debug_level: u8 = std::env::var("LOADTEST_JANUS_DEBUG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3)
            .min(7);
        for (name, text) in config_files(&dir, cfg.ip, http_port, &ports, debug_level) {
            std::fs::write(dir.join("conf").join(name), text)?;
        }
        let log = dir.join("janus.log");
        let child = Command::new(&cfg.bin)
            .arg("-F")
            .arg(dir.join("conf"))
            .args(["-N", "-o", "-i"])
            .arg(cfg.ip.to_string())
            .arg("-L")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", cfg.bin.display()))?;
        let mut server = JanusServer {
            child,
            dir,
            http_base: format!("http://127.0.0.1:{http_port}/janus"),
            ports,
            ip: cfg.ip,
        };
        let http = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "Janus exited ({status}) while starting:\n{}",
                    server.log_tail()
                );
            }
            let info = http
                .get(format!("{}/info", server.http_base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if info.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "Janus's HTTP API did not answer within 15 s:\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!(pid = server.pid(), base = %server.http_base, "janus started");
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of Janus's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("janus did not stop within 5 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One viewer's session on Janus's HTTP API (a session, a Streaming plugin handle).
pub struct JanusViewer {
    http: reqwest::Client,
    session_url: String,
    handle_url: String,
}

fn transaction() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The `data.id` of a Janus `success` reply.
fn success_id(v: &Value) -> anyhow::Result<u64> {
    if v["janus"] != "success" {
        bail!("Janus answered {v}");
    }
    v["data"]["id"]
        .as_u64()
        .ok_or_else(|| anyhow!("Janus's reply has no id: {v}"))
}

/// The plugin's error in an event, if it is one.
fn plugin_error(v: &Value) -> Option<String> {
    let data = &v["plugindata"]["data"];
    data.get("error").map(|e| {
        format!(
            "Streaming plugin error {}: {}",
            data["error_code"],
            e.as_str().unwrap_or_default()
        )
    })
}

impl JanusViewer {
    async fn post(&self, url: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let text = r.text().await.with_context(|| format!("POST {url}"))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))?;
        if v["janus"] == "error" {
            bail!("Janus: {}", v["error"]);
        }
        Ok(v)
    }

    /// Creates a session and attaches the Streaming plugin.
    pub async fn open(http: &reqwest::Client, base: &str) -> anyhow::Result<JanusViewer> {
        let mut v = JanusViewer {
            http: http.clone(),
            session_url: base.to_string(),
            handle_url: String::new(),
        };
        let session = success_id(
            &v.post(
                base,
                json!({"janus": "create", "transaction": transaction()}),
            )
            .await?,
        )?;
        v.session_url = format!("{base}/{session}");
        let handle = success_id(
            &v.post(
                &v.session_url,
                json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": transaction()}),
            )
            .await?,
        )?;
        v.handle_url = format!("{}/{handle}", v.session_url);
        Ok(v)
    }

    async fn message(&self, body: Value, jsep: Option<Value>) -> anyhow::Result<()> {
        let mut msg = json!({"janus": "message", "transaction": transaction(), "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.post(&self.handle_url, msg).await?;
        Ok(())
    }

    /// Long-polls the session's events until one carries an SDP (or a plugin error).
    async fn wait_jsep(&self, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let r = self
                .http
                .get(format!("{}?maxev=5", self.session_url))
                .timeout(Duration::from_secs(35))
                .send()
                .await?;
            let v: Value = serde_json::from_str(&r.text().await?)?;
            let events = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            for e in events {
                if let Some(err) = plugin_error(&e) {
                    bail!("{err}");
                }
                if let Some(sdp) = e["jsep"]["sdp"].as_str() {
                    return Ok(sdp.to_string());
                }
            }
        }
        bail!("Janus sent no offer within {limit:?}")
    }

    /// Asks to watch the mountpoint; returns Janus's offer.
    pub async fn watch(&self, mountpoint: u64) -> anyhow::Result<String> {
        self.message(json!({"request": "watch", "id": mountpoint}), None)
            .await?;
        self.wait_jsep(Duration::from_secs(20)).await
    }

    /// Sends our answer and starts the media.
    pub async fn start(&self, answer: &str) -> anyhow::Result<()> {
        self.message(
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer})),
        )
        .await
    }

    /// Picks the simulcast substream (0 lowest … 2 highest).
    pub async fn substream(&self, n: u8) -> anyhow::Result<()> {
        self.message(json!({"request": "configure", "substream": n}), None)
            .await
    }

    /// Destroys the session (best effort, bounded).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(3),
            self.post(
                &self.session_url,
                json!({"janus": "destroy", "transaction": transaction()}),
            ),
        )
        .await;
    }
}

/// Which substream a `?layer=`-style cap ("low", "mid", none = high) means.
pub fn substream_of(cap: Option<&str>) -> u8 {
    match cap {
        Some("low") => 0,
        Some("mid") => 1,
        _ => 2,
    }
}

/// An SDP without its candidate lines: Janus is ICE-lite and learns our address from our
/// connectivity checks, which come through the relay.
pub fn strip_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|l| !l.trim_start().starts_with("a=candidate:"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_binds_http_and_mountpoint_to_loopback_and_ice_to_the_given_address() {
        let ports = MountpointPorts {
            audio: "127.0.0.1:5002".parse().unwrap(),
            video: [
                "127.0.0.1:5004".parse().unwrap(),
                "127.0.0.1:5006".parse().unwrap(),
                "127.0.0.1:5008".parse().unwrap(),
            ],
        };
        let files = config_files(
            Path::new("/tmp/x"),
            "10.0.0.1".parse().unwrap(),
            7850,
            &ports,
            3,
        );
        let get = |n: &str| files.iter().find(|(f, _)| *f == n).unwrap().1.clone();
        let janus = get("janus.jcfg");
        assert!(janus.contains(r#"ice_enforce_list = "10.0.0.1""#));
        assert!(janus.contains("ice_lite = true"));
        assert!(janus.contains("session_timeout = 0"));
        assert!(janus.contains("debug_level = 3"));
        assert!(janus.contains(r#"plugins_folder = "/tmp/x/plugins""#));
        let http = get("janus.transport.http.jcfg");
        assert!(http.contains("port = 7850") && http.contains(r#"ip = "127.0.0.1""#));
        let s = get("janus.plugin.streaming.jcfg");
        assert!(s.contains("port = 5002"));
        assert!(s.contains("port = 5004 port2 = 5006 port3 = 5008 simulcast = true"));
        assert_eq!(s.matches(r#"iface = "127.0.0.1""#).count(), 2);
    }

    #[test]
    fn replies_and_errors_are_read() {
        let ok = json!({"janus": "success", "transaction": "t", "data": {"id": 42}});
        assert_eq!(success_id(&ok).unwrap(), 42);
        assert!(success_id(&json!({"janus": "error", "error": {"code": 458}})).is_err());
        assert!(success_id(&json!({"janus": "success"})).is_err());
        let ev = json!({"janus": "event", "plugindata": {"plugin": "janus.plugin.streaming",
            "data": {"error_code": 455, "error": "No such mountpoint/stream 7"}}});
        assert!(plugin_error(&ev).unwrap().contains("No such mountpoint"));
        assert!(plugin_error(&json!({"janus": "event", "plugindata": {"data": {}}})).is_none());
    }

    #[test]
    fn caps_map_to_substreams_and_candidates_are_stripped() {
        assert_eq!(substream_of(Some("low")), 0);
        assert_eq!(substream_of(Some("mid")), 1);
        assert_eq!(substream_of(None), 2);
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 1 127.0.0.1 5 typ host\r\na=mid:a\r\n";
        assert_eq!(
            strip_candidates(sdp),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n"
        );
    }
}
