//! Test harness shared by the integration tests that drive the SFU binary with a second,
//! independent WebRTC stack (webrtc-rs, the `webrtc` crate).
//!
//! * [`Sfu`] spawns `sfu serve` on free loopback ports with a random `CLASSROOM_SECRET`,
//!   waits for `/healthz`, mints tokens by running `sfu token`, and sends SIGTERM on drop.
//! * [`Publisher`] is a WHIP client: Opus + a VP8 (optionally 3-layer simulcast, rids l/m/h)
//!   or H.264 camera, with synthetic but well-formed payloads at real-time pace; it answers
//!   PLI/FIR with a keyframe on the next frame.
//! * [`Subscriber`] is a WHEP client with recvonly transceivers audio, video (camera),
//!   video (courseware) and records every RTP packet it receives per slot.
//! * [`analyze`] turns a packet log into numbers the tests assert on.
//!
//! Everything stays on 127.0.0.1. Tests run one at a time (see [`run`]) so the numbers
//! stay steady on a small, loaded machine.
#![allow(dead_code)]

pub mod redis_server;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCPFeedback, RTCRtpTransceiver, RTCRtpTransceiverInit};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

// ---------------------------------------------------------------------------------------------
// Running a test
// ---------------------------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());
static LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs one test body on its own multi-thread runtime, one test at a time, with an overall
/// time limit. On timeout the tails of the SFU logs of this test are printed.
pub fn run<F: Future<Output = ()>>(name: &str, limit: Duration, body: F) {
    let _serial = lock(&SERIAL);
    lock(&LOGS).clear();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = rt.block_on(async { tokio::time::timeout(limit, body).await });
    rt.shutdown_timeout(Duration::from_secs(3));
    if out.is_err() {
        for p in lock(&LOGS).iter() {
            eprintln!("--- tail of {} ---\n{}", p.display(), tail(p, 200));
        }
        panic!("{name}: did not finish within {limit:?}");
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `lines` lines of a log file (ANSI colours stripped).
pub fn tail(path: &Path, lines: usize) -> String {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot open log: {e})"),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = strip_ansi(&String::from_utf8_lossy(&buf));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub async fn sleep(d: Duration) {
    tokio::time::sleep(d).await
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------------
// The SFU process
// ---------------------------------------------------------------------------------------------

pub struct Sfu {
    child: Option<Child>,
    pub http_port: u16,
    pub media_port: u16,
    pub secret: String,
    pub base: String,
    pub log_path: PathBuf,
    pub client: reqwest::Client,
}

/// HTTP answer to an SDP POST.
#[derive(Debug, Clone)]
pub struct SdpResponse {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind tcp")
        .port()
}

/// A port free for both UDP and TCP (the media port serves both).
pub fn free_media_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = u.local_addr().expect("udp addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn sfu_log_filter() -> String {
    std::env::var("SFU_TEST_RUST_LOG").unwrap_or_else(|_| "info,sfu=debug".to_string())
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client")
}

impl Sfu {
    pub async fn start() -> Sfu {
        Self::start_with(&[]).await
    }

    /// Starts the SFU with extra `serve` arguments (e.g. `--config`, `--media-bind`).
    pub async fn start_with(extra: &[&str]) -> Sfu {
        Self::start_node(&format!("{:032x}", rand::random::<u128>()), extra).await
    }

    /// Starts the SFU with a given token secret (the nodes of a cluster share one).
    pub async fn start_node(secret: &str, extra: &[&str]) -> Sfu {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let http_port = free_tcp_port();
            let media_port = free_media_port();
            let secret = secret.to_string();
            let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
            let log_path = std::env::temp_dir().join(format!(
                "sfu-webrtc-rs-{}-{}.log",
                std::process::id(),
                id
            ));
            let log = std::fs::File::create(&log_path).expect("create sfu log");
            let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
                .args([
                    "serve",
                    "--http",
                    &format!("127.0.0.1:{http_port}"),
                    "--media-port",
                    &media_port.to_string(),
                ])
                .args(extra)
                .env("CLASSROOM_SECRET", &secret)
                .env("RUST_LOG", sfu_log_filter())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn sfu binary");
            lock(&LOGS).push(log_path.clone());
            eprintln!(
                "sfu pid {} http 127.0.0.1:{http_port} media 127.0.0.1:{media_port} log {}",
                child.id(),
                log_path.display()
            );
            let mut sfu = Sfu {
                child: Some(child),
                http_port,
                media_port,
                secret,
                base: format!("http://127.0.0.1:{http_port}"),
                log_path,
                client: http_client(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(st) = sfu.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    last_err = format!(
                        "sfu exited early with {st}; log tail:\n{}",
                        tail(&sfu.log_path, 40)
                    );
                    sfu.child = None;
                    break;
                }
                if let Ok(r) = sfu.client.get(sfu.url("/healthz")).send().await {
                    if r.status().as_u16() == 200 {
                        return sfu;
                    }
                }
                if Instant::now() > deadline {
                    panic!(
                        "sfu did not answer 200 on /healthz within 30 s; log tail:\n{}",
                        tail(&sfu.log_path, 60)
                    );
                }
                sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("could not start the sfu: {last_err}");
    }

    /// Process id of the running SFU (for /proc sampling in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `sfu token --room R --role ROLE --sub SUB` with this server's secret.
    pub fn token(&self, room: &str, role: &str, sub: &str) -> String {
        mint_token(&self.secret, room, role, sub)
    }

    pub async fn post_sdp(&self, path: &str, token: Option<&str>, sdp: &str) -> SdpResponse {
        post_sdp(&self.client, &self.url(path), token, sdp).await
    }

    pub async fn delete(&self, location: &str, token: Option<&str>) -> u16 {
        let mut req = self.client.delete(location);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!("DELETE {location}: {e}"),
        }
    }

    /// POST a JSON body with a bearer token; status and body.
    pub async fn post_json(&self, path: &str, token: &str, body: &str) -> (u16, String) {
        let req = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string());
        match req.send().await {
            Ok(r) => {
                let st = r.status().as_u16();
                (st, r.text().await.unwrap_or_default())
            }
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    /// GET with a bearer token.
    pub async fn get_auth(&self, path: &str, token: &str) -> (u16, String) {
        match self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
        {
            Ok(r) => {
                let st = r.status().as_u16();
                (st, r.text().await.unwrap_or_default())
            }
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        match self.client.get(self.url(path)).send().await {
            Ok(r) => {
                let st = r.status().as_u16();
                (st, r.text().await.unwrap_or_default())
            }
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    /// Prints `GET /api/rooms/{room}` (the SFU's own counters, for diagnosis).
    pub async fn dump_room(&self, room: &str) {
        let (st, body) = self.get(&format!("/api/rooms/{room}")).await;
        eprintln!("GET /api/rooms/{room} -> {st}: {body}");
    }

    /// The whole log without ANSI colour codes.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read(&self.log_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    /// Ends a test: SIGTERM must give exit code 0 within 15 s, and the log must hold no panic
    /// and no ERROR line.
    pub async fn finish(&mut self) {
        let status = self.shutdown().await;
        assert!(
            matches!(status, Some(s) if s.success()),
            "sfu did not exit 0 within 15 s of SIGTERM: {status:?}\n{}",
            self.log_tail(40)
        );
        let log = self.log_text();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
            .collect();
        assert!(
            bad.is_empty(),
            "sfu log has {} panic/ERROR lines:\n{}",
            bad.len(),
            bad.iter().take(20).copied().collect::<Vec<_>>().join("\n")
        );
    }

    /// SIGKILL: the node dies without a word (no directory leave, no QUIC close).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 15 s) for the exit status.
    pub async fn shutdown(&mut self) -> Option<ExitStatus> {
        terminate(self.child.take()?).await
    }
}

/// Sends `child` SIGTERM and waits up to 15 s for its exit status; `None` (and SIGKILL) if it
/// did not exit by then.
pub async fn terminate(mut child: Child) -> Option<ExitStatus> {
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- tail of sfu log {} ---\n{}",
                self.log_path.display(),
                tail(&self.log_path, 200)
            );
        }
    }
}

/// Runs `sfu token` with the given secret.
pub fn mint_token(secret: &str, room: &str, role: &str, sub: &str) -> String {
    mint_token_ttl(secret, room, role, sub, None)
}

/// Runs `sfu token [--ttl TTL]` with the given secret.
pub fn mint_token_ttl(
    secret: &str,
    room: &str,
    role: &str,
    sub: &str,
    ttl: Option<&str>,
) -> String {
    let mut args = vec!["token", "--room", room, "--role", role, "--sub", sub];
    if let Some(t) = ttl {
        args.extend(["--ttl", t]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .args(&args)
        .env("CLASSROOM_SECRET", secret)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sfu token");
    assert!(
        out.status.success(),
        "sfu token --room {room} --role {role} --sub {sub} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        tok.split('.').count(),
        3,
        "sfu token printed something that is not a JWT: {tok:?}"
    );
    tok
}

pub async fn post_sdp(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    sdp: &str,
) -> SdpResponse {
    let mut req = client
        .post(url)
        .header("Content-Type", "application/sdp")
        .body(sdp.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = match req.send().await {
        Ok(r) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = r.status().as_u16();
    // After a redirect (a cluster placing the session on another node) the session lives
    // where the answer came from.
    let final_url = r.url().to_string();
    let hdr = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_string())
    };
    let location = hdr("location").map(|l| resolve(&final_url, &l));
    let etag = hdr("etag");
    let content_type = hdr("content-type");
    let body = r.text().await.unwrap_or_default();
    SdpResponse {
        status,
        location,
        etag,
        content_type,
        body,
    }
}

fn resolve(base: &str, location: &str) -> String {
    match reqwest::Url::parse(base).and_then(|b| b.join(location)) {
        Ok(u) => u.to_string(),
        Err(_) => location.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// webrtc-rs API configured for loopback
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

fn video_feedback() -> Vec<RTCPFeedback> {
    vec![
        RTCPFeedback {
            typ: "goog-remb".into(),
            parameter: "".into(),
        },
        RTCPFeedback {
            typ: "ccm".into(),
            parameter: "fir".into(),
        },
    ]
}

pub fn opus_params() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
        ..Default::default()
    }
}

pub fn video_params(c: VideoCodec) -> RTCRtpCodecParameters {
    match c {
        VideoCodec::Vp8 => RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: "".to_owned(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: 96,
            ..Default::default()
        },
        VideoCodec::H264 => RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: H264_FMTP.to_owned(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: 102,
            ..Default::default()
        },
    }
}

/// Which side of the SFU a webrtc-rs peer connection is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// WHIP: sends, may send simulcast (needs the rid header extensions).
    Publisher,
    /// WHEP: receives only.
    Subscriber,
}

/// An API whose peer connections gather exactly one candidate: UDP on 127.0.0.1.
///
/// Subscribers do not offer the rtp-stream-id extensions, to stay clear of a webrtc-rs 0.17
/// race: when the SFU's first SRTP packets for an SSRC declared in the answer arrive before
/// webrtc-rs has started that receiver (common on a loaded machine), the SRTP session hands
/// the stream to its "undeclared SSRC" simulcast prober, which eats up to
/// SIMULCAST_PROBE_COUNT packets looking for a rid and then *closes* the stream; the track's
/// reader then fails with "buffer: closed" and the viewer silently receives nothing more.
/// Without a negotiated rid extension the prober gives up before touching the stream, and the
/// receiver started from the answer's a=ssrc line gets every packet.
pub fn build_api(video: &[VideoCodec], side: Side) -> API {
    let mut m = MediaEngine::default();
    m.register_codec(opus_params(), RTPCodecType::Audio)
        .expect("register opus");
    for c in video {
        m.register_codec(video_params(*c), RTPCodecType::Video)
            .expect("register video codec");
    }
    let video_exts: &[&str] = match side {
        Side::Publisher => &[
            webrtc::sdp::extmap::SDES_MID_URI,
            webrtc::sdp::extmap::SDES_RTP_STREAM_ID_URI,
            webrtc::sdp::extmap::SDES_REPAIR_RTP_STREAM_ID_URI,
        ],
        Side::Subscriber => &[webrtc::sdp::extmap::SDES_MID_URI],
    };
    for &uri in video_exts {
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            RTPCodecType::Video,
            None,
        )
        .expect("register video header extension");
    }
    m.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: webrtc::sdp::extmap::SDES_MID_URI.to_owned(),
        },
        RTPCodecType::Audio,
        None,
    )
    .expect("register audio mid extension");
    // NACK generator/responder and sender/receiver reports. Publishers also get TWCC; viewers
    // do not: webrtc-rs's transport-wide feedback misreports packets that reach a viewer
    // before its track is bound (see the probe race above), which an SFU estimator reads as
    // heavy loss. Without TWCC the SFU forwards the requested layer, which is what these
    // forwarding tests check; bandwidth adaptation is tested with Chromium viewers.
    let registry = match side {
        Side::Publisher => {
            register_default_interceptors(Registry::new(), &mut m).expect("default interceptors")
        }
        Side::Subscriber => webrtc::api::interceptor_registry::configure_rtcp_reports(
            webrtc::api::interceptor_registry::configure_nack(Registry::new(), &mut m),
        ),
    };

    let mut s = SettingEngine::default();
    s.set_network_types(vec![NetworkType::Udp4]);
    s.set_include_loopback_candidate(true);
    s.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
    s.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);

    APIBuilder::new()
        .with_media_engine(m)
        .with_interceptor_registry(registry)
        .with_setting_engine(s)
        .build()
}

/// Watches the peer connection state; remembers when it first became Connected.
#[derive(Clone)]
pub struct PcState {
    rx: watch::Receiver<RTCPeerConnectionState>,
    connected_at: Arc<Mutex<Option<Instant>>>,
    history: Arc<Mutex<Vec<(Instant, RTCPeerConnectionState)>>>,
}

impl PcState {
    fn attach(pc: &RTCPeerConnection) -> PcState {
        let (tx, rx) = watch::channel(RTCPeerConnectionState::New);
        let connected_at = Arc::new(Mutex::new(None));
        let history = Arc::new(Mutex::new(Vec::new()));
        let (c2, h2) = (connected_at.clone(), history.clone());
        pc.on_peer_connection_state_change(Box::new(move |s: RTCPeerConnectionState| {
            let now = Instant::now();
            if s == RTCPeerConnectionState::Connected {
                lock(&c2).get_or_insert(now);
            }
            lock(&h2).push((now, s));
            tx.send_replace(s);
            Box::pin(async {})
        }));
        PcState {
            rx,
            connected_at,
            history,
        }
    }

    async fn wait_connected(&mut self, limit: Duration) -> Result<Instant, String> {
        let r = tokio::time::timeout(
            limit,
            self.rx.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .map(|r| r.map(|s| *s));
        match r {
            Err(_) => Err(format!(
                "peer connection not connected within {limit:?}; states: {:?}",
                self.states()
            )),
            Ok(Err(_)) => Err("state channel closed".into()),
            Ok(Ok(RTCPeerConnectionState::Connected)) => {
                Ok(lock(&self.connected_at).unwrap_or_else(Instant::now))
            }
            Ok(Ok(s)) => Err(format!("peer connection went {s} instead of connected")),
        }
    }

    pub fn current(&self) -> RTCPeerConnectionState {
        *self.rx.borrow()
    }

    pub fn states(&self) -> Vec<RTCPeerConnectionState> {
        lock(&self.history).iter().map(|(_, s)| *s).collect()
    }
}

async fn gathered_offer(pc: &RTCPeerConnection) -> Result<String, String> {
    let offer = pc
        .create_offer(None)
        .await
        .map_err(|e| format!("create_offer: {e}"))?;
    let mut gather = pc.gathering_complete_promise().await;
    pc.set_local_description(offer)
        .await
        .map_err(|e| format!("set_local_description: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(10), gather.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    if !sdp.contains("127.0.0.1") {
        return Err(format!(
            "webrtc-rs offer has no 127.0.0.1 candidate:\n{sdp}"
        ));
    }
    Ok(sdp)
}

/// A complete, valid offer (audio + VP8 video, sendonly) from a throwaway peer connection,
/// for requests that are meant to be refused for other reasons than the SDP.
pub async fn throwaway_offer() -> String {
    let api = build_api(&[VideoCodec::Vp8], Side::Publisher);
    let pc = api
        .new_peer_connection(RTCConfiguration::default())
        .await
        .expect("pc");
    for kind in [RTPCodecType::Audio, RTPCodecType::Video] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            }),
        )
        .await
        .expect("transceiver");
    }
    let sdp = gathered_offer(&pc).await.expect("offer");
    let _ = pc.close().await;
    sdp
}

// ---------------------------------------------------------------------------------------------
// Synthetic media
// ---------------------------------------------------------------------------------------------

/// One encoding of the camera.
#[derive(Clone, Debug)]
pub struct Layer {
    /// rid when simulcast ("l", "m", "h"); ignored for a single layer.
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    pub kbps: u32,
}

pub fn simulcast_layers() -> Vec<Layer> {
    vec![
        Layer {
            rid: "l",
            width: 320,
            height: 180,
            kbps: 150,
        },
        Layer {
            rid: "m",
            width: 640,
            height: 360,
            kbps: 400,
        },
        Layer {
            rid: "h",
            width: 1280,
            height: 720,
            kbps: 1000,
        },
    ]
}

#[derive(Clone, Debug)]
pub struct PublisherOpts {
    pub codec: VideoCodec,
    /// One layer: plain track. Several: simulcast with their rids.
    pub layers: Vec<Layer>,
    /// Periodic keyframes; PLI/FIR from the SFU also force one.
    pub keyframe_interval: Duration,
    pub audio: bool,
    pub fps: u32,
}

impl PublisherOpts {
    pub fn vp8_simulcast() -> Self {
        PublisherOpts {
            codec: VideoCodec::Vp8,
            layers: simulcast_layers(),
            keyframe_interval: Duration::from_secs(2),
            audio: true,
            fps: 30,
        }
    }

    pub fn single(codec: VideoCodec, width: u16, height: u16) -> Self {
        PublisherOpts {
            codec,
            layers: vec![Layer {
                rid: "h",
                width,
                height,
                kbps: 600,
            }],
            keyframe_interval: Duration::from_secs(2),
            audio: true,
            fps: 30,
        }
    }

    pub fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }
}

pub const RTP_PAYLOAD_MAX: usize = 1100;

struct LayerGen {
    layer: Layer,
    codec: VideoCodec,
    seq: u16,
    picture_id: u16,
    tl0: u8,
    frame_no: u32,
    h264_frame_num: u32,
    idr_id: u32,
    last_key: Option<Instant>,
}

impl LayerGen {
    fn new(layer: Layer, codec: VideoCodec) -> Self {
        LayerGen {
            layer,
            codec,
            seq: rand::random(),
            picture_id: rand::random::<u16>() & 0x7fff,
            tl0: rand::random(),
            frame_no: 0,
            h264_frame_num: 0,
            idr_id: 0,
            last_key: None,
        }
    }

    fn frame_bytes(&self, fps: u32, key: bool) -> usize {
        let delta = (self.layer.kbps as usize * 1000 / 8 / fps as usize).max(200);
        if key {
            delta * 4
        } else {
            delta
        }
    }

    fn filler(&self, n: usize) -> impl Iterator<Item = u8> + '_ {
        // never zero, so no H.264 start-code emulation in the filler
        let salt = self.frame_no as u8;
        (0..n).map(move |i| ((i as u8).wrapping_mul(31) ^ salt) | 0x01)
    }

    fn next_frame(&mut self, fps: u32, key: bool) -> Vec<(Bytes, bool)> {
        let out = match self.codec {
            VideoCodec::Vp8 => self.vp8_frame(fps, key),
            VideoCodec::H264 => self.h264_access_unit(fps, key),
        };
        self.frame_no = self.frame_no.wrapping_add(1);
        out
    }

    /// VP8 frame (RFC 6386 frame tag, keyframe start code and size) packetized per RFC 7741
    /// with an extended descriptor: 15-bit PictureID, TL0PICIDX, TID 0 / Y.
    fn vp8_frame(&mut self, fps: u32, key: bool) -> Vec<(Bytes, bool)> {
        let size = self.frame_bytes(fps, key);
        let mut frame = Vec::with_capacity(size);
        let first_part = ((size - 10) as u32).min(0x7ffff);
        let tag: u32 = (if key { 0 } else { 1 }) | (1 << 4) | (first_part << 5);
        frame.extend_from_slice(&[tag as u8, (tag >> 8) as u8, (tag >> 16) as u8]);
        if key {
            frame.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            frame.extend_from_slice(&(self.layer.width & 0x3fff).to_le_bytes());
            frame.extend_from_slice(&(self.layer.height & 0x3fff).to_le_bytes());
        }
        let rest = size - frame.len();
        let fill: Vec<u8> = self.filler(rest).collect();
        frame.extend_from_slice(&fill);

        let chunk = RTP_PAYLOAD_MAX - 6;
        let n = frame.len().div_ceil(chunk);
        let mut out = Vec::with_capacity(n);
        for (i, part) in frame.chunks(chunk).enumerate() {
            let mut p = Vec::with_capacity(part.len() + 6);
            p.push(0x80 | if i == 0 { 0x10 } else { 0x00 }); // X, S, PID 0
            p.push(0xe0); // I, L, T
            p.push(0x80 | ((self.picture_id >> 8) as u8 & 0x7f)); // M=1, 15-bit PictureID
            p.push(self.picture_id as u8);
            p.push(self.tl0);
            p.push(0x20); // TID 0, Y=1
            p.extend_from_slice(part);
            out.push((Bytes::from(p), i + 1 == n));
        }
        self.picture_id = (self.picture_id + 1) & 0x7fff;
        self.tl0 = self.tl0.wrapping_add(1);
        out
    }

    /// H.264 constrained baseline access unit, RFC 6184 packetization-mode 1:
    /// keyframe = STAP-A(SPS, PPS) + IDR slice; otherwise one non-IDR slice; FU-A when large.
    fn h264_access_unit(&mut self, fps: u32, key: bool) -> Vec<(Bytes, bool)> {
        let size = self.frame_bytes(fps, key);
        let mut out: Vec<Bytes> = Vec::new();
        if key {
            self.h264_frame_num = 0;
            let sps = h264_sps(self.layer.width, self.layer.height);
            let pps = h264_pps();
            let mut stap = vec![0x78u8]; // F=0, NRI=3, type 24
            for nal in [&sps, &pps] {
                stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                stap.extend_from_slice(nal);
            }
            out.push(Bytes::from(stap));
        }
        let slice = self.h264_slice(key, size);
        if slice.len() <= RTP_PAYLOAD_MAX {
            out.push(Bytes::from(slice));
        } else {
            let hdr = slice[0];
            let body = &slice[1..];
            let chunk = RTP_PAYLOAD_MAX - 2;
            let n = body.len().div_ceil(chunk);
            for (i, part) in body.chunks(chunk).enumerate() {
                let mut p = Vec::with_capacity(part.len() + 2);
                p.push((hdr & 0xe0) | 28);
                let mut fu = hdr & 0x1f;
                if i == 0 {
                    fu |= 0x80;
                }
                if i + 1 == n {
                    fu |= 0x40;
                }
                p.push(fu);
                p.extend_from_slice(part);
                out.push(Bytes::from(p));
            }
        }
        if !key {
            self.h264_frame_num = (self.h264_frame_num + 1) % 16;
        } else {
            self.h264_frame_num = 1;
            self.idr_id = (self.idr_id + 1) % 2;
        }
        let n = out.len();
        out.into_iter()
            .enumerate()
            .map(|(i, b)| (b, i + 1 == n))
            .collect()
    }

    fn h264_slice(&self, idr: bool, size: usize) -> Vec<u8> {
        let mut b = Bits::default();
        b.ue(0); // first_mb_in_slice
        b.ue(if idr { 7 } else { 5 }); // slice_type I / P (all slices)
        b.ue(0); // pic_parameter_set_id
        b.u(4, if idr { 0 } else { self.h264_frame_num }); // frame_num (log2_max_frame_num = 4)
        if idr {
            b.ue(self.idr_id); // idr_pic_id
        } else {
            b.u(1, 0); // num_ref_idx_active_override_flag
            b.u(1, 0); // ref_pic_list_modification_flag_l0
        }
        if idr {
            b.u(1, 0); // no_output_of_prior_pics_flag
            b.u(1, 0); // long_term_reference_flag
        } else {
            b.u(1, 0); // adaptive_ref_pic_marking_mode_flag
        }
        b.se(0); // slice_qp_delta
        b.ue(0); // disable_deblocking_filter_idc
        b.align_ones();
        let mut rbsp = b.out;
        let target = size.saturating_sub(1).max(rbsp.len() + 16);
        let fill: Vec<u8> = self.filler(target - rbsp.len()).collect();
        rbsp.extend_from_slice(&fill);
        let mut nal = vec![if idr { 0x65 } else { 0x41 }];
        nal.extend_from_slice(&emulation_prevention(&rbsp));
        nal
    }
}

/// Packets of one synthetic frame (for self-checks of the generators and parsers).
pub fn synthetic_frame(codec: VideoCodec, layer: Layer, key: bool) -> Vec<(Bytes, bool)> {
    LayerGen::new(layer, codec).next_frame(30, key)
}

#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    cur: u8,
    n: u8,
}

impl Bits {
    fn bit(&mut self, v: bool) {
        self.cur = (self.cur << 1) | v as u8;
        self.n += 1;
        if self.n == 8 {
            self.out.push(self.cur);
            self.cur = 0;
            self.n = 0;
        }
    }
    fn u(&mut self, bits: u32, v: u32) {
        for i in (0..bits).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }
    fn ue(&mut self, v: u32) {
        let x = v + 1;
        let len = 32 - x.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, x);
    }
    fn se(&mut self, v: i32) {
        let m = if v <= 0 {
            (-2 * v) as u32
        } else {
            (2 * v - 1) as u32
        };
        self.ue(m);
    }
    fn trailing(mut self) -> Vec<u8> {
        self.bit(true);
        while self.n != 0 {
            self.bit(false);
        }
        self.out
    }
    /// byte-align with ones (slice data follows; content does not matter here)
    fn align_ones(&mut self) {
        while self.n != 0 {
            self.bit(true);
        }
    }
}

fn emulation_prevention(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + 8);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
    }
    out
}

/// SPS: profile 66 (baseline), constraint_set0..2 (0xe0), level 3.1, 4:2:0, POC type 2.
pub fn h264_sps(width: u16, height: u16) -> Vec<u8> {
    let mbs_w = (width as u32).div_ceil(16);
    let mbs_h = (height as u32).div_ceil(16);
    let crop_r = (mbs_w * 16 - width as u32) / 2;
    let crop_b = (mbs_h * 16 - height as u32) / 2;
    let mut b = Bits::default();
    b.u(8, 66);
    b.u(8, 0xe0);
    b.u(8, 31);
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type
    b.ue(1); // max_num_ref_frames
    b.u(1, 0); // gaps_in_frame_num_value_allowed_flag
    b.ue(mbs_w - 1);
    b.ue(mbs_h - 1);
    b.u(1, 1); // frame_mbs_only_flag
    b.u(1, 1); // direct_8x8_inference_flag
    if crop_r > 0 || crop_b > 0 {
        b.u(1, 1);
        b.ue(0);
        b.ue(crop_r);
        b.ue(0);
        b.ue(crop_b);
    } else {
        b.u(1, 0);
    }
    b.u(1, 0); // vui_parameters_present_flag
    let mut nal = vec![0x67];
    nal.extend_from_slice(&emulation_prevention(&b.trailing()));
    nal
}

pub fn h264_pps() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // pic_parameter_set_id
    b.ue(0); // seq_parameter_set_id
    b.u(1, 0); // entropy_coding_mode_flag (CAVLC)
    b.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
    b.ue(0); // num_slice_groups_minus1
    b.ue(0); // num_ref_idx_l0_default_active_minus1
    b.ue(0); // num_ref_idx_l1_default_active_minus1
    b.u(1, 0); // weighted_pred_flag
    b.u(2, 0); // weighted_bipred_idc
    b.se(0); // pic_init_qp_minus26
    b.se(0); // pic_init_qs_minus26
    b.se(0); // chroma_qp_index_offset
    b.u(1, 1); // deblocking_filter_control_present_flag
    b.u(1, 0); // constrained_intra_pred_flag
    b.u(1, 0); // redundant_pic_cnt_present_flag
    let mut nal = vec![0x68];
    nal.extend_from_slice(&emulation_prevention(&b.trailing()));
    nal
}

// ---------------------------------------------------------------------------------------------
// WHIP publisher
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct LayerStats {
    pub rid: String,
    pub plis: AtomicU32,
    pub firs: AtomicU32,
    pub keyframes: AtomicU32,
    pub packets: AtomicU64,
    pub write_errors: AtomicU64,
    /// SSRC webrtc-rs sends this layer with (known once connected)
    pub ssrc: AtomicU32,
    /// arrival times of PLI/FIR for this layer
    pub requests_at: Mutex<Vec<Instant>>,
    force_key: AtomicBool,
}

impl LayerStats {
    /// The shortest time between two consecutive keyframe requests on this layer.
    pub fn min_request_spacing(&self) -> Option<Duration> {
        let at = lock(&self.requests_at);
        at.windows(2).map(|w| w[1] - w[0]).min()
    }
}

#[derive(Debug, Default)]
pub struct PubStats {
    pub layers: Vec<LayerStats>,
    pub audio_packets: AtomicU64,
    pub audio_ssrc: AtomicU32,
    /// keyframe requests naming the audio SSRC
    pub stray_requests: Mutex<Vec<String>>,
}

impl PubStats {
    /// Counts the PLI/FIR in one RTCP compound that name the reader's own SSRC (`layer`:
    /// index of a video layer, None: the audio sender). webrtc-rs hands a compound to the
    /// reader of *every* SSRC it names, so counting only the own SSRC counts each request once.
    fn on_rtcp(
        &self,
        layer: Option<usize>,
        pkts: &[Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>],
    ) {
        let own = match layer {
            Some(i) => self.layers[i].ssrc.load(Ordering::SeqCst),
            None => self.audio_ssrc.load(Ordering::SeqCst),
        };
        for p in pkts {
            let any = p.as_any();
            let (kind, ssrcs): (&str, Vec<u32>) =
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    ("PLI", vec![pli.media_ssrc])
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    ("FIR", fir.fir.iter().map(|e| e.ssrc).collect())
                } else {
                    continue;
                };
            for ssrc in ssrcs.into_iter().filter(|s| *s == own) {
                match layer.map(|i| &self.layers[i]) {
                    Some(ls) => {
                        if kind == "PLI" {
                            ls.plis.fetch_add(1, Ordering::SeqCst);
                        } else {
                            ls.firs.fetch_add(1, Ordering::SeqCst);
                        }
                        lock(&ls.requests_at).push(Instant::now());
                        ls.force_key.store(true, Ordering::SeqCst);
                    }
                    None => {
                        lock(&self.stray_requests)
                            .push(format!("{kind} for the audio SSRC {ssrc}"));
                    }
                }
            }
        }
    }
}

impl PubStats {
    pub fn plis(&self) -> u32 {
        self.layers
            .iter()
            .map(|l| l.plis.load(Ordering::SeqCst) + l.firs.load(Ordering::SeqCst))
            .sum()
    }
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for l in &self.layers {
            let _ = write!(
                s,
                "[{}: {} pkts, {} keyframes, {} PLI, {} FIR, {} write errors] ",
                l.rid,
                l.packets.load(Ordering::SeqCst),
                l.keyframes.load(Ordering::SeqCst),
                l.plis.load(Ordering::SeqCst),
                l.firs.load(Ordering::SeqCst),
                l.write_errors.load(Ordering::SeqCst)
            );
        }
        let _ = write!(
            s,
            "[audio: {} pkts]",
            self.audio_packets.load(Ordering::SeqCst)
        );
        let stray = lock(&self.stray_requests);
        if !stray.is_empty() {
            let _ = write!(
                s,
                " [{} stray keyframe requests, e.g. {}]",
                stray.len(),
                stray[0]
            );
        }
        s
    }
}

pub struct Publisher {
    pub pc: Arc<RTCPeerConnection>,
    pub state: PcState,
    pub location: String,
    pub etag: Option<String>,
    pub answer: String,
    pub offer: String,
    pub token: String,
    pub stats: Arc<PubStats>,
    pub connected_at: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Publisher {
    /// WHIP-publishes to `/whip/{room}` and starts sending media once connected.
    pub async fn connect(
        sfu: &Sfu,
        room: &str,
        token: &str,
        opts: PublisherOpts,
    ) -> Result<Publisher, String> {
        let api = build_api(&[opts.codec], Side::Publisher);
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration::default())
                .await
                .map_err(|e| format!("new_peer_connection: {e}"))?,
        );
        let mut state = PcState::attach(&pc);
        let stats = Arc::new(PubStats {
            layers: opts
                .layers
                .iter()
                .map(|l| LayerStats {
                    rid: if opts.simulcast() {
                        l.rid.to_string()
                    } else {
                        "single".to_string()
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });

        let sendonly = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                send_encodings: vec![],
            })
        };

        // audio first, then the camera (the order browsers use)
        let audio_track = Arc::new(TrackLocalStaticRTP::new(
            opus_params().capability,
            "teacher-audio".to_owned(),
            "teacher".to_owned(),
        ));
        let audio_tr = pc
            .add_transceiver_from_track(
                audio_track.clone() as Arc<dyn TrackLocal + Send + Sync>,
                sendonly(),
            )
            .await
            .map_err(|e| format!("add audio transceiver: {e}"))?;
        let audio_sender = audio_tr.sender().await;

        let cap = video_params(opts.codec).capability;
        let video_tracks: Vec<Arc<TrackLocalStaticRTP>> = opts
            .layers
            .iter()
            .map(|l| {
                Arc::new(if opts.simulcast() {
                    TrackLocalStaticRTP::new_with_rid(
                        cap.clone(),
                        "teacher-camera".to_owned(),
                        l.rid.to_owned(),
                        "teacher".to_owned(),
                    )
                } else {
                    TrackLocalStaticRTP::new(
                        cap.clone(),
                        "teacher-camera".to_owned(),
                        "teacher".to_owned(),
                    )
                })
            })
            .collect();
        let video_tr = pc
            .add_transceiver_from_track(
                video_tracks[0].clone() as Arc<dyn TrackLocal + Send + Sync>,
                sendonly(),
            )
            .await
            .map_err(|e| format!("add video transceiver: {e}"))?;
        let video_sender = video_tr.sender().await;
        for t in &video_tracks[1..] {
            video_sender
                .add_encoding(t.clone() as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .map_err(|e| format!("add_encoding (simulcast) failed: {e}"))?;
        }

        let offer = gathered_offer(&pc).await?;
        if opts.simulcast() && !offer.contains("a=simulcast:send") {
            return Err(format!(
                "webrtc-rs did not put a=simulcast in the offer:\n{offer}"
            ));
        }
        let resp = sfu
            .post_sdp(&format!("/whip/{room}"), Some(token), &offer)
            .await;
        if resp.status != 201 {
            let _ = pc.close().await;
            return Err(format!(
                "WHIP POST /whip/{room} answered {} (expected 201): {}",
                resp.status, resp.body
            ));
        }
        let location = resp
            .location
            .clone()
            .ok_or("WHIP 201 without a Location header")?;
        pc.set_remote_description(
            RTCSessionDescription::answer(resp.body.clone()).map_err(|e| format!("answer: {e}"))?,
        )
        .await
        .map_err(|e| format!("set_remote_description(WHIP answer): {e}\n{}", resp.body))?;

        let connected_at = state.wait_connected(Duration::from_secs(15)).await?;
        {
            let params = video_sender.get_parameters().await;
            for (i, l) in opts.layers.iter().enumerate() {
                let enc = if opts.simulcast() {
                    params.encodings.iter().find(|e| e.rid.as_str() == l.rid)
                } else {
                    params.encodings.first()
                };
                if let Some(e) = enc {
                    stats.layers[i].ssrc.store(e.ssrc, Ordering::SeqCst);
                }
            }
            if let Some(e) = audio_sender.get_parameters().await.encodings.first() {
                stats.audio_ssrc.store(e.ssrc, Ordering::SeqCst);
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();

        // RTCP readers: PLI/FIR force a keyframe on the layer they name.
        for (i, l) in opts.layers.iter().enumerate() {
            let sender = video_sender.clone();
            let stats = stats.clone();
            let rid = l.rid;
            let simulcast = opts.simulcast();
            tasks.push(tokio::spawn(async move {
                loop {
                    let r = if simulcast {
                        sender.read_rtcp_simulcast(rid).await
                    } else {
                        sender.read_rtcp().await
                    };
                    let Ok((pkts, _)) = r else { break };
                    stats.on_rtcp(Some(i), &pkts);
                }
            }));
        }
        {
            let sender = audio_sender.clone();
            let stats = stats.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((pkts, _)) = sender.read_rtcp().await {
                    stats.on_rtcp(None, &pkts);
                }
            }));
        }

        // video pump
        {
            let stop = stop.clone();
            let stats = stats.clone();
            let opts = opts.clone();
            let tracks = video_tracks.clone();
            tasks.push(tokio::spawn(async move {
                let mut gens: Vec<LayerGen> = opts
                    .layers
                    .iter()
                    .map(|l| LayerGen::new(l.clone(), opts.codec))
                    .collect();
                let ts0: u32 = rand::random();
                let start = Instant::now();
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / opts.fps as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let now = Instant::now();
                    let ts =
                        ts0.wrapping_add(((now - start).as_secs_f64() * 90000.0) as u64 as u32);
                    for (i, g) in gens.iter_mut().enumerate() {
                        let ls = &stats.layers[i];
                        let key = g.last_key.is_none()
                            || ls.force_key.swap(false, Ordering::SeqCst)
                            || g.last_key
                                .is_some_and(|k| now - k >= opts.keyframe_interval);
                        if key {
                            g.last_key = Some(now);
                            ls.keyframes.fetch_add(1, Ordering::SeqCst);
                        }
                        for (payload, marker) in g.next_frame(opts.fps, key) {
                            let pkt = Packet {
                                header: Header {
                                    version: 2,
                                    marker,
                                    payload_type: 0, // set per binding
                                    sequence_number: g.seq,
                                    timestamp: ts,
                                    ..Default::default()
                                },
                                payload,
                            };
                            g.seq = g.seq.wrapping_add(1);
                            match tracks[i].write_rtp(&pkt).await {
                                Ok(_) => ls.packets.fetch_add(1, Ordering::SeqCst),
                                Err(_) => ls.write_errors.fetch_add(1, Ordering::SeqCst),
                            };
                        }
                    }
                }
            }));
        }

        // audio pump: 20 ms Opus packets (TOC 0xf8: CELT FB 20 ms mono, one frame)
        if opts.audio {
            let stop = stop.clone();
            let stats = stats.clone();
            let track = audio_track.clone();
            tasks.push(tokio::spawn(async move {
                let ts0: u32 = rand::random();
                let mut seq: u16 = rand::random();
                // like a sound card: one packet per 20 ms of audio; a late task catches up
                // (Burst) so the packet count and timestamps stay exact under load
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n: u32 = 0;
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let frames = n;
                    let mut payload = vec![0xf8u8];
                    payload.extend((0..40u8).map(|i| i.wrapping_mul(7) ^ n as u8));
                    n = n.wrapping_add(1);
                    let pkt = Packet {
                        header: Header {
                            version: 2,
                            marker: false,
                            payload_type: 0,
                            sequence_number: seq,
                            timestamp: ts0.wrapping_add(frames.wrapping_mul(960)),
                            ..Default::default()
                        },
                        payload: Bytes::from(payload),
                    };
                    seq = seq.wrapping_add(1);
                    if track.write_rtp(&pkt).await.is_ok() {
                        stats.audio_packets.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }

        Ok(Publisher {
            pc,
            state,
            location,
            etag: resp.etag,
            answer: resp.body,
            offer,
            token: token.to_string(),
            stats,
            connected_at,
            stop,
            tasks,
        })
    }

    fn stop_media(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Stops media, DELETEs the WHIP session (returns the status) and closes the connection.
    pub async fn leave(mut self, sfu: &Sfu) -> u16 {
        self.stop_media();
        let st = sfu.delete(&self.location, Some(&self.token)).await;
        let _ = self.pc.close().await;
        st
    }

    /// Stops sending media but keeps the peer connection (ICE, DTLS) up: to the SFU this
    /// looks like a teacher machine that hung, or one whose replacement shows up before the
    /// old session timed out.
    pub fn go_silent(&mut self) {
        self.stop_media();
    }

    /// Stops media and closes the peer connection without a WHIP DELETE.
    pub async fn vanish(mut self) {
        self.stop_media();
        let _ = self.pc.close().await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop_media();
    }
}

// ---------------------------------------------------------------------------------------------
// WHEP subscriber
// ---------------------------------------------------------------------------------------------

pub const SLOT_AUDIO: usize = 0;
pub const SLOT_CAMERA: usize = 1;
pub const SLOT_COURSEWARE: usize = 2;
pub const SLOT_NAMES: [&str; 3] = ["audio", "camera", "courseware"];

/// What a keyframe start told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// VP8: from the keyframe header; H.264: 0.
    pub width: u16,
    pub height: u16,
    /// H.264: IDR slice start present in the packet
    pub idr: bool,
    /// H.264: SPS present in the packet
    pub sps: bool,
}

#[derive(Clone, Debug)]
pub struct RxPkt {
    pub at: Instant,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub pt: u8,
    pub marker: bool,
    pub len: usize,
    pub key: Option<Key>,
}

#[derive(Clone, Debug)]
pub struct TrackSeen {
    pub at: Instant,
    pub ssrc: u32,
    pub mime: String,
    pub fmtp: String,
    pub payload_type: u8,
}

#[derive(Clone, Debug, Default)]
pub struct SlotLog {
    pub tracks: Vec<TrackSeen>,
    pub pkts: Vec<RxPkt>,
    /// read errors from webrtc-rs (the reader keeps going after transient ones)
    pub read_errors: Vec<String>,
}

pub struct Subscriber {
    pub name: String,
    pub pc: Arc<RTCPeerConnection>,
    pub state: PcState,
    pub location: String,
    pub etag: Option<String>,
    pub answer: String,
    pub token: String,
    pub connected_at: Instant,
    pub posted_at: Instant,
    slots: Arc<Vec<Mutex<SlotLog>>>,
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// VP8 RTP payload → keyframe info if this packet starts a keyframe.
pub fn parse_vp8(p: &[u8]) -> Option<Key> {
    if p.is_empty() {
        return None;
    }
    let b0 = p[0];
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let b1 = *p.get(1)?;
        i = 2;
        if b1 & 0x80 != 0 {
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if b1 & 0x40 != 0 {
            i += 1;
        }
        if b1 & 0x30 != 0 {
            i += 1;
        }
    }
    if !s || pid != 0 {
        return None;
    }
    let f = p.get(i..)?;
    if f.len() < 10 || f[0] & 1 != 0 || f[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some(Key {
        width: u16::from_le_bytes([f[6], f[7]]) & 0x3fff,
        height: u16::from_le_bytes([f[8], f[9]]) & 0x3fff,
        idr: false,
        sps: false,
    })
}

/// H.264 RTP payload (mode 1) → Some if it carries an SPS or the start of an IDR slice.
pub fn parse_h264(p: &[u8]) -> Option<Key> {
    let t = *p.first()? & 0x1f;
    let (mut idr, mut sps) = (false, false);
    match t {
        5 => idr = true,
        7 => sps = true,
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let n = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                match p[i + 2] & 0x1f {
                    5 => idr = true,
                    7 => sps = true,
                    _ => {}
                }
                i += 2 + n;
            }
        }
        28 => {
            let fu = *p.get(1)?;
            if fu & 0x80 != 0 && fu & 0x1f == 5 {
                idr = true;
            }
        }
        _ => {}
    }
    if idr || sps {
        Some(Key {
            width: 0,
            height: 0,
            idr,
            sps,
        })
    } else {
        None
    }
}

impl Subscriber {
    /// WHEP-subscribes to `/whep/{room}{query}` with recvonly audio, video, video.
    pub async fn connect(
        sfu: &Sfu,
        room: &str,
        token: &str,
        query: &str,
        video_codecs: &[VideoCodec],
        name: &str,
    ) -> Result<Subscriber, String> {
        use RTPCodecType::{Audio, Video};
        Self::connect_layout(
            sfu,
            room,
            token,
            query,
            video_codecs,
            name,
            &[Audio, Video, Video],
        )
        .await
    }

    /// WHEP with recvonly transceivers of `kinds`, in order (slots follow the m-line order:
    /// a second audio asks for the on-stage classroom, videos after the courseware are its
    /// camera and then tiles).
    pub async fn connect_layout(
        sfu: &Sfu,
        room: &str,
        token: &str,
        query: &str,
        video_codecs: &[VideoCodec],
        name: &str,
        kinds: &[RTPCodecType],
    ) -> Result<Subscriber, String> {
        let api = build_api(video_codecs, Side::Subscriber);
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration::default())
                .await
                .map_err(|e| format!("new_peer_connection: {e}"))?,
        );
        let mut state = PcState::attach(&pc);
        let mut transceivers: Vec<Arc<RTCRtpTransceiver>> = Vec::new();
        for &kind in kinds {
            transceivers.push(
                pc.add_transceiver_from_kind(
                    kind,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        send_encodings: vec![],
                    }),
                )
                .await
                .map_err(|e| format!("add recvonly transceiver: {e}"))?,
            );
        }
        let slots: Arc<Vec<Mutex<SlotLog>>> = Arc::new(
            (0..kinds.len())
                .map(|_| Mutex::new(SlotLog::default()))
                .collect(),
        );
        let readers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        {
            let slots = slots.clone();
            let readers = readers.clone();
            let transceivers = transceivers.clone();
            let name = name.to_string();
            pc.on_track(Box::new(move |track, _receiver, transceiver| {
                let slot = transceivers
                    .iter()
                    .position(|t| Arc::ptr_eq(t, &transceiver));
                let slots = slots.clone();
                let name = name.clone();
                let codec = track.codec();
                let mime = codec.capability.mime_type.to_lowercase();
                let seen = TrackSeen {
                    at: Instant::now(),
                    ssrc: track.ssrc(),
                    mime: mime.clone(),
                    fmtp: codec.capability.sdp_fmtp_line.clone(),
                    payload_type: track.payload_type(),
                };
                let Some(slot) = slot else {
                    eprintln!("{name}: track {seen:?} on an unknown transceiver");
                    return Box::pin(async {});
                };
                lock(&slots[slot]).tracks.push(seen);
                let h = tokio::spawn(async move {
                    let mut consecutive_errors = 0;
                    loop {
                        let pkt = match track.read_rtp().await {
                            Ok((pkt, _)) => {
                                consecutive_errors = 0;
                                pkt
                            }
                            Err(e) => {
                                let msg = e.to_string();
                                let closed = matches!(
                                    e,
                                    webrtc::Error::ErrClosedPipe | webrtc::Error::ErrRTPReceiverNil
                                ) || msg.contains("closed")
                                    || msg.contains("EOF");
                                consecutive_errors += 1;
                                {
                                    let mut log = lock(&slots[slot]);
                                    if log.read_errors.len() < 50 {
                                        log.read_errors
                                            .push(format!("{:?}: {msg}", Instant::now()));
                                    }
                                }
                                if closed || consecutive_errors > 200 {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            }
                        };
                        let key = if mime == "video/vp8" {
                            parse_vp8(&pkt.payload)
                        } else if mime == "video/h264" {
                            parse_h264(&pkt.payload)
                        } else {
                            None
                        };
                        lock(&slots[slot]).pkts.push(RxPkt {
                            at: Instant::now(),
                            seq: pkt.header.sequence_number,
                            ts: pkt.header.timestamp,
                            ssrc: pkt.header.ssrc,
                            pt: pkt.header.payload_type,
                            marker: pkt.header.marker,
                            len: pkt.payload.len(),
                            key,
                        });
                    }
                });
                lock(&readers).push(h);
                Box::pin(async {})
            }));
        }

        let offer = gathered_offer(&pc).await?;
        let posted_at = Instant::now();
        let resp = sfu
            .post_sdp(&format!("/whep/{room}{query}"), Some(token), &offer)
            .await;
        if resp.status != 201 {
            let _ = pc.close().await;
            return Err(format!(
                "{name}: WHEP POST /whep/{room}{query} answered {} (expected 201): {}",
                resp.status, resp.body
            ));
        }
        let location = resp
            .location
            .clone()
            .ok_or_else(|| format!("{name}: WHEP 201 without a Location header"))?;
        pc.set_remote_description(
            RTCSessionDescription::answer(resp.body.clone()).map_err(|e| format!("answer: {e}"))?,
        )
        .await
        .map_err(|e| {
            format!(
                "{name}: set_remote_description(WHEP answer): {e}\n{}",
                resp.body
            )
        })?;
        let connected_at = state
            .wait_connected(Duration::from_secs(15))
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Subscriber {
            name: name.to_string(),
            pc,
            state,
            location,
            etag: resp.etag,
            answer: resp.body,
            token: token.to_string(),
            connected_at,
            posted_at,
            slots,
            readers,
        })
    }

    pub fn slot(&self, i: usize) -> SlotLog {
        lock(&self.slots[i]).clone()
    }

    pub async fn leave(self, sfu: &Sfu) -> u16 {
        let st = sfu.delete(&self.location, Some(&self.token)).await;
        let _ = self.pc.close().await;
        st
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for h in lock(&self.readers).drain(..) {
            h.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct StreamReport {
    pub packets: usize,
    pub ssrcs: BTreeSet<u32>,
    /// sequence numbers absent between the lowest and highest received (after extension)
    pub missing: i64,
    pub duplicates: usize,
    /// packets arriving with a lower sequence number than one received before
    pub reordered: usize,
    /// in sequence order, timestamp steps that go backwards
    pub ts_backwards: usize,
    /// first to last arrival
    pub span: Duration,
    /// longest silence between two arrivals
    pub max_gap: Duration,
    /// keyframe starts (deduplicated by RTP timestamp): time since t0, key info
    pub keyframes: Vec<(Duration, Key)>,
    pub first_packet_after: Option<Duration>,
    pub first_key_after: Option<Duration>,
    pub first_packet_is_key: bool,
    /// distinct RTP timestamps (≈ frames)
    pub frames: usize,
}

/// Extends 16-bit sequence numbers (arrival order) to i64 across wraps.
pub fn extend_seqs(pkts: &[RxPkt]) -> Vec<i64> {
    let mut out = Vec::with_capacity(pkts.len());
    let mut last: Option<i64> = None;
    for p in pkts {
        let e = match last {
            None => p.seq as i64,
            Some(l) => l + (p.seq.wrapping_sub(l as u16) as i16) as i64,
        };
        out.push(e);
        last = Some(e);
    }
    out
}

pub fn analyze(pkts: &[RxPkt], t0: Instant) -> StreamReport {
    let ext = extend_seqs(pkts);
    let uniq: BTreeSet<i64> = ext.iter().copied().collect();
    let missing = match (uniq.first(), uniq.last()) {
        (Some(a), Some(b)) => (b - a + 1) - uniq.len() as i64,
        _ => 0,
    };
    let mut reordered = 0;
    let mut hi = i64::MIN;
    for &e in &ext {
        if e < hi {
            reordered += 1;
        }
        hi = hi.max(e);
    }
    let mut by_seq: Vec<(i64, u32)> = ext.iter().copied().zip(pkts.iter().map(|p| p.ts)).collect();
    by_seq.sort_by_key(|x| x.0);
    by_seq.dedup_by_key(|x| x.0);
    let ts_backwards = by_seq
        .windows(2)
        .filter(|w| (w[1].1.wrapping_sub(w[0].1) as i32) < 0)
        .count();
    let mut max_gap = Duration::ZERO;
    for w in pkts.windows(2) {
        max_gap = max_gap.max(w[1].at.saturating_duration_since(w[0].at));
    }
    let span = match (pkts.first(), pkts.last()) {
        (Some(a), Some(b)) => b.at - a.at,
        _ => Duration::ZERO,
    };
    let mut keyframes: Vec<(Duration, Key)> = Vec::new();
    let mut key_ts: Option<u32> = None;
    for p in pkts {
        if let Some(k) = p.key {
            if key_ts != Some(p.ts) {
                keyframes.push((p.at.saturating_duration_since(t0), k));
                key_ts = Some(p.ts);
            } else if let Some(last) = keyframes.last_mut() {
                last.1.idr |= k.idr;
                last.1.sps |= k.sps;
            }
        }
    }
    let frames = pkts
        .iter()
        .filter(|p| p.len > 0)
        .map(|p| p.ts)
        .collect::<BTreeSet<_>>()
        .len();
    StreamReport {
        packets: pkts.len(),
        ssrcs: pkts.iter().map(|p| p.ssrc).collect(),
        missing,
        duplicates: ext.len() - uniq.len(),
        reordered,
        ts_backwards,
        span,
        max_gap,
        first_key_after: keyframes.first().map(|k| k.0),
        keyframes,
        first_packet_after: pkts.first().map(|p| p.at.saturating_duration_since(t0)),
        first_packet_is_key: pkts
            .iter()
            .find(|p| p.len > 0)
            .is_some_and(|p| p.key.is_some()),
        frames,
    }
}

impl StreamReport {
    pub fn line(&self) -> String {
        let widths: Vec<String> = self
            .keyframes
            .iter()
            .map(|(t, k)| {
                if k.width > 0 {
                    format!("{:.1}s:{}x{}", t.as_secs_f64(), k.width, k.height)
                } else {
                    format!(
                        "{:.1}s:{}{}",
                        t.as_secs_f64(),
                        if k.sps { "SPS+" } else { "" },
                        if k.idr { "IDR" } else { "-" }
                    )
                }
            })
            .collect();
        format!(
            "{} pkts, {} frames, ssrcs {:x?}, missing {}, dup {}, reordered {}, ts backwards {}, span {:.2}s, max gap {:.0}ms, first pkt after {:?}, first is key {}, keyframes [{}]",
            self.packets,
            self.frames,
            self.ssrcs,
            self.missing,
            self.duplicates,
            self.reordered,
            self.ts_backwards,
            self.span.as_secs_f64(),
            self.max_gap.as_secs_f64() * 1000.0,
            self.first_packet_after,
            self.first_packet_is_key,
            widths.join(" ")
        )
    }
}
