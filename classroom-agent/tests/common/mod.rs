//! Shared by the agent's end-to-end tests: the real SFU binary on loopback ports, agent
//! processes with their logs, and readers for the SFU's room API and the agent's /status.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The tests share a 2-core machine with everything else: one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn target_dir() -> PathBuf {
    // target/<profile>/deps/lesson-<hash>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .to_path_buf()
}

pub fn sfu_bin() -> PathBuf {
    workspace_bin("sfu", "SFU_BIN")
}

pub fn scheduler_bin() -> PathBuf {
    workspace_bin("scheduler", "SCHEDULER_BIN")
}

/// Another package's binary: `$env` if set, else target/<profile>/`name`, built with
/// `cargo build -p name` when missing (`cargo test --workspace` has built it already).
fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    let p = target_dir().join(name);
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", name])
            .status()
            .unwrap_or_else(|e| panic!("run cargo build -p {name}: {e}"));
        assert!(st.success(), "cargo build -p {name} failed");
    }
    assert!(p.exists(), "no {name} binary at {}: set {env}", p.display());
    p
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free for UDP and TCP alike (the SFU's media port serves both).
pub fn free_media_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

pub fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "agent-test-{}-{}-{name}.log",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

pub fn tail(p: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A child process with its log; killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let log = log_path(name);
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        eprintln!("{name}: pid {} log {}", child.id(), log.display());
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM, then the exit status within `limit` (SIGKILL after it).
    pub fn stop(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take()?;
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The exit status if it exits by itself within `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn tail(&self) -> String {
        format!("--- {} ---\n{}", self.name, tail(&self.log, 60))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Sfu {
    pub proc: Proc,
    pub http: u16,
    pub media: u16,
    pub secret: String,
}

impl Sfu {
    pub fn start() -> Sfu {
        let secret = format!("agent-test-secret-{}", std::process::id());
        Sfu::start_on(free_tcp_port(), free_media_port(), secret)
    }

    pub fn start_on(http: u16, media: u16, secret: String) -> Sfu {
        let proc = Proc::spawn(
            "sfu",
            Command::new(sfu_bin())
                .args(["serve", "--http", &format!("127.0.0.1:{http}")])
                .args(["--media-port", &media.to_string()])
                .env("CLASSROOM_SECRET", &secret)
                .env("RUST_LOG", "info"),
        );
        let sfu = Sfu {
            proc,
            http,
            media,
            secret,
        };
        let ok = wait_until(Duration::from_secs(30), || {
            get(&sfu.url("/healthz")).is_some_and(|(st, _)| st == 200)
        });
        assert!(ok, "SFU not healthy within 30 s\n{}", sfu.proc.tail());
        sfu
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn token(&self, room: &str, role: &str, sub: &str) -> String {
        self.token_for(room, role, sub, "2h")
    }

    /// A token good for `ttl` (humantime: "1s", "45m").
    pub fn token_for(&self, room: &str, role: &str, sub: &str, ttl: &str) -> String {
        let out = Command::new(sfu_bin())
            .args(["token", "--room", room, "--role", role, "--sub", sub])
            .args(["--ttl", ttl])
            .env("CLASSROOM_SECRET", &self.secret)
            .env_remove("RUST_LOG")
            .output()
            .expect("run sfu token");
        assert!(
            out.status.success(),
            "sfu token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn room(&self, room: &str) -> Option<Value> {
        let (st, body) = get(&self.url(&format!("/api/rooms/{room}")))?;
        (st == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }
}

pub fn get(url: &str) -> Option<(u16, String)> {
    let c = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let r = c.get(url).send().ok()?;
    let st = r.status().as_u16();
    Some((st, r.text().unwrap_or_default()))
}

/// Ends `p` with SIGTERM and asserts it exited 0 within 15 s.
pub fn stop_cleanly(p: &mut Proc, name: &str) {
    let st = p.stop(Duration::from_secs(15));
    assert!(
        st.is_some_and(|s| s.success()),
        "{name} exit {st:?}\n{}",
        p.tail()
    );
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub fn agent(name: &str, sfu: &Sfu, room: &str, token: &str, extra: &[&str]) -> Proc {
    agent_with_env(name, sfu, room, token, extra, &[])
}

/// [`agent`] with more environment variables (a `DISPLAY`, say).
pub fn agent_with_env(
    name: &str,
    sfu: &Sfu,
    room: &str,
    token: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    Proc::spawn(
        name,
        Command::new(env!("CARGO_BIN_EXE_classroom-agent"))
            .args(["--sfu", &sfu.url(""), "--room", room, "--token", token])
            .args(["--status", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info,classroom_agent=debug")
            .envs(env.iter().copied()),
    )
}

/// A teacher agent (`t1`) with `args`, once the SFU sees it publish all camera layers.
pub fn publishing_teacher(sfu: &Sfu, room: &str, args: &[&str]) -> Proc {
    let teacher = agent(
        "teacher",
        sfu,
        room,
        &sfu.token(room, "teacher", "t1"),
        args,
    );
    wait_publishing(sfu, room, &teacher, Duration::from_secs(30));
    teacher
}

/// The agent's `/status` JSON, at the address its log announces.
pub fn agent_status(p: &Proc) -> Option<Value> {
    let log = std::fs::read_to_string(&p.log).ok()?;
    let url = log
        .lines()
        .find_map(|l| l.split("status on ").nth(1))?
        .split_whitespace()
        .next()?
        .to_string();
    let (st, body) = get(&url)?;
    (st == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// A classroom that only plays the lesson (add `--play`).
pub const LISTENER: &[&str] = &["--role", "classroom", "--video", "none", "--audio", "none"];

/// Small pictures keep three VP8 encoders cheap on a loaded 2-core machine.
pub const TEACHER: &[&str] = &[
    "--role", "teacher", "--video", "test", "--audio", "test", "--width", "320", "--height", "180",
    "--fps", "15",
];

/// The teacher's camera layers as the SFU sees them: (rid, packets) per layer.
pub fn camera_layers(room: &Value) -> Vec<(String, u64)> {
    room["publishers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["role"] == "teacher" && p["connected"] == true)
        .flat_map(|p| p["tracks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["track"] == "teacher_camera")
        .flat_map(|t| t["layers"].as_array().cloned().unwrap_or_default())
        .map(|l| {
            (
                l["rid"].as_str().unwrap_or("-").to_string(),
                l["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

pub fn audio_packets(room: &Value) -> u64 {
    room["publishers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["connected"] == true)
        .flat_map(|p| p["tracks"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["track"] == "teacher_audio")
        .flat_map(|t| t["layers"].as_array().cloned().unwrap_or_default())
        .map(|l| l["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Camera packets the SFU has forwarded to viewers.
pub fn camera_forwarded(room: &Value) -> u64 {
    forwarded(room, "teacher_camera")
}

/// Packets of `slot` the SFU has forwarded to viewers.
pub fn forwarded(room: &Value, slot: &str) -> u64 {
    room["subscribers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["slots"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["slot"] == slot)
        .map(|s| s["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Waits until every camera layer and the voice have packets at the SFU.
pub fn wait_publishing(sfu: &Sfu, room: &str, teacher: &Proc, limit: Duration) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(limit, || {
        if let Some(r) = sfu.room(room) {
            let layers = camera_layers(&r);
            let ok =
                layers.len() == 3 && layers.iter().all(|(_, n)| *n > 0) && audio_packets(&r) > 0;
            last = r;
            return ok;
        }
        false
    });
    assert!(
        ok,
        "teacher not publishing 3 layers + audio within {limit:?}: {last}\n{}\n{}",
        teacher.tail(),
        sfu.proc.tail()
    );
    last
}

/// Kills a plain child process on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A queue that never blocks its upstream, for decoding test recordings.
pub const UNBOUNDED: &str = "queue max-size-buffers=0 max-size-bytes=0 max-size-time=0";
