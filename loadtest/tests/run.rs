//! The load generator end to end: the real SFU binary, 20 webrtc-rs classrooms on mixed
//! emulated links, 15 s; the report must hold every figure, and the figures must be right where
//! they cannot depend on the machine's load (nothing lost after retransmission on the clean
//! link, latency measured everywhere, nobody receiving more than their link carries).
//! Thresholds on anything load-dependent are generous: the SFU, 20 peers and the relays share
//! two cores here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadtest::report::Report;

/// The runs take the machine's two cores: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn sfu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SFU_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/run-xxxx → target/debug/sfu
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("sfu");
    assert!(
        p.exists(),
        "{} not found: build it first (`cargo build -p sfu`, as `make test` does) or set SFU_BIN",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Sfu {
    child: Child,
    http: String,
    secret: String,
    log: PathBuf,
}

impl Sfu {
    fn start() -> Sfu {
        let http_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let media_port = free_port();
        let secret = format!("{:032x}", rand::random::<u128>());
        let log = std::env::temp_dir().join(format!("loadtest-sfu-{}.log", std::process::id()));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(sfu_bin())
            .args([
                "serve",
                "--http",
                &format!("127.0.0.1:{http_port}"),
                "--media-port",
                &media_port.to_string(),
            ])
            .env("CLASSROOM_SECRET", &secret)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn sfu");
        let sfu = Sfu {
            child,
            http: format!("127.0.0.1:{http_port}"),
            secret,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sfu.healthy() {
            assert!(Instant::now() < deadline, "sfu not healthy within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        sfu
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.http) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the loadtest binary; returns (exit code, stdout, stderr, wall time).
fn loadtest(args: &[&str], secret: &str, limit: Duration) -> (i32, String, String, Duration) {
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .env("CLASSROOM_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadtest");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "loadtest {args:?} did not stop by itself within {limit:?}\n{}",
                e.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status.code().unwrap_or(-1),
        o.join().unwrap(),
        e.join().unwrap(),
        t0.elapsed(),
    )
}

#[test]
fn bad_arguments_and_an_unreachable_sfu_are_clear_errors() {
    let limit = Duration::from_secs(60);
    let (code, _, err, _) = loadtest(
        &[
            "--sfu",
            "http://127.0.0.1:1",
            "--classrooms",
            "1",
            "--duration",
            "5s",
        ],
        "s3cret",
        limit,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unreachable"), "{err}");
    let (code, _, err, _) = loadtest(&["--classrooms", "0"], "s3cret", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--classrooms"), "{err}");
    let (code, _, err, _) = loadtest(&["--profile", "moon-base"], "s3cret", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("moon-base"), "{err}");
    let (code, _, err, _) = loadtest(&["--duration", "soon"], "s3cret", limit);
    assert_ne!(code, 0, "{err}");
    let (code, _, err, _) = loadtest(&["--classrooms", "1"], "", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("secret"), "{err}");
    // Janus: an address is required, and a loopback one cannot work
    let (code, _, err, _) = loadtest(&["--target", "janus"], "", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--janus-ip"), "{err}");
    let (code, _, err, _) = loadtest(&["--target", "janus", "--janus-ip", "127.0.0.1"], "", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("loopback"), "{err}");
    let (code, _, err, _) = loadtest(&["--compare", "/nonexistent.json", "/x.json"], "", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.json"), "{err}");
    // a cluster: edges are URLs, and no more pids than edges
    let (code, _, err, _) = loadtest(&["--edge", "county-7"], "s3cret", limit);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--edge \"county-7\""), "{err}");
    let (code, _, err, _) = loadtest(
        &[
            "--edge",
            "http://127.0.0.1:1",
            "--edge-pid",
            "1",
            "--edge-pid",
            "2",
        ],
        "s3cret",
        limit,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--edge-pid"), "{err}");
    let (code, _, err, _) = loadtest(
        &["--compare-cluster", "/nonexistent.json", "/x.json"],
        "",
        limit,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.json"), "{err}");
}

#[test]
fn twenty_classrooms_on_mixed_links() {
    let _one_at_a_time = serial();
    let sfu = Sfu::start();
    let dir = std::env::temp_dir().join(format!("loadtest-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let html_path = dir.join("report.html");
    let pid = sfu.child.id().to_string();
    let base = format!("http://{}", sfu.http);
    let duration = 15;
    let (code, out, err, took) = loadtest(
        &[
            "--sfu",
            &base,
            "--room",
            "loadtest-ci",
            "--classrooms",
            "20",
            "--duration",
            &format!("{duration}s"),
            "--mix",
            "clean:2,rural-2m:1,teaching-point-1m:1",
            "--sfu-pid",
            &pid,
            "--quiet",
            "--report",
            report_path.to_str().unwrap(),
            "--html",
            html_path.to_str().unwrap(),
        ],
        &sfu.secret,
        // the clip is encoded once (cached) — allow for that on a cold cache
        Duration::from_secs(duration + 240),
    );
    assert_eq!(
        code,
        0,
        "loadtest failed\nstdout:\n{out}\nstderr:\n{err}\nsfu log: {}",
        sfu.log.display()
    );
    eprintln!("{out}\n(took {took:?})");
    let text = std::fs::read_to_string(&report_path).expect("report written");
    // every field present: the report parses into the full structure
    let report: Report = serde_json::from_str(&text).expect("report has every field");
    let html = std::fs::read_to_string(&html_path).expect("html written");
    assert!(html.matches("<svg").count() >= 3, "three plots inline");
    assert!(!html.contains("plot failed"));

    assert_eq!(report.failed_joins, Vec::<String>::new());
    assert_eq!(report.joined_classrooms, 20);
    assert_eq!(report.classrooms.len(), 20);
    let count = |p: &str| report.classrooms.iter().filter(|c| c.profile == p).count();
    assert_eq!(
        (
            count("clean"),
            count("rural-2m"),
            count("teaching-point-1m")
        ),
        (10, 5, 5)
    );
    for c in &report.classrooms {
        // latency measured for every classroom, and every packet's send time found
        assert!(
            c.latency_ms.samples > 50 && c.latency_ms.p99.is_some(),
            "{}: latency samples {}",
            c.name,
            c.latency_ms.samples
        );
        assert!(c.latency_ms.p50 <= c.latency_ms.p99);
        assert_eq!(c.latency_unmatched, 0, "{}: unmatched packets", c.name);
        assert!(c.time_to_first_frame_ms.is_some(), "{}: no frame", c.name);
        assert!(c.frames_complete > 0 && c.audio_packets > 0, "{}", c.name);
        // throughput consistent with the emulated capacity: the link never delivers more than
        // its rate, and something real flowed (at least the 150 kbit/s layer)
        if let Some(cap) = c.capacity_kbps {
            assert!(
                c.link_kbps <= cap as f64 * 1.05,
                "{}: {} kbit/s over a {cap} kbit/s link",
                c.name,
                c.link_kbps
            );
        }
        assert!(c.rx_kbps > 80.0, "{}: only {} kbit/s", c.name, c.rx_kbps);
        assert!(
            c.link_kbps >= c.rx_kbps * 0.9,
            "{}: link bytes include every RTP byte",
            c.name
        );
        let relay = c.relay.as_ref().expect("relay counters");
        assert!(relay.down_delivered_bytes > 0);
        if c.profile == "clean" {
            // nothing is lost on a clean link, so nothing may be missing after retransmission
            assert_eq!(c.loss.lost, 0, "{}: lost after retransmission", c.name);
            assert_eq!(relay.down_dropped_loss_packets, 0);
            assert!(c.frames_complete_pct > 50.0, "{}", c.name);
        } else {
            assert!(
                c.loss_after_retransmission_pct <= c.loss_before_retransmission_pct + 1e-9,
                "{}: retransmission made loss worse",
                c.name
            );
        }
    }
    // the lossy links really lost packets, and retransmissions repaired some
    let lossy: Vec<_> = report
        .classrooms
        .iter()
        .filter(|c| c.profile != "clean")
        .collect();
    assert!(lossy.iter().map(|c| c.loss.gaps_seen).sum::<u64>() > 0);
    assert!(lossy.iter().map(|c| c.loss.repaired).sum::<u64>() > 0);
    assert!(lossy.iter().map(|c| c.rtx_packets).sum::<u64>() > 0);
    assert_eq!(report.profiles.len(), 3);
    for p in &report.profiles {
        assert!(p.latency_ms.p99.is_some() && !p.latency_cdf.is_empty());
        assert!(!p.bitrate_kbps.is_empty());
    }
    // the teacher sent three layers of real VP8 near their targets, and Opus
    assert_eq!(report.teacher.layers.len(), 3);
    for l in &report.teacher.layers {
        let ratio = l.clip_kbps / l.target_kbps as f64;
        assert!(
            (0.6..1.4).contains(&ratio),
            "{}: clip {} kbit/s",
            l.rid,
            l.clip_kbps
        );
        assert!(l.frames > 0);
    }
    assert!(report.teacher.audio_packets > 0);
    // SFU and load generator figures
    let s = &report.sfu_process;
    assert_eq!(s.pid, Some(sfu.child.id()));
    assert!(s.cpu_pct_mean.is_some_and(|c| c > 0.0));
    assert!(s.rss_mb_max.is_some_and(|m| m > 1.0));
    assert!(s.forwarded_packets.is_some_and(|f| f > 1000.0));
    assert!(s.forwarded_per_core_second.is_some_and(|f| f > 0.0));
    assert!(s.samples.len() >= 5);
    assert!(report.loadgen.cpu_pct_mean > 0.0 && report.loadgen.cpu_pct_per_classroom > 0.0);
    assert!(report.totals.latency_ms.p99.is_some());
    // it stopped by itself: duration plus a bounded grace
    assert!(
        report.duration_s < duration as f64 + 10.0,
        "ran {} s",
        report.duration_s
    );
    assert!(out.contains("sfu (pid"), "summary table printed");
}

#[test]
fn churn_replaces_classrooms_at_the_rate_asked() {
    let _one_at_a_time = serial();
    let sfu = Sfu::start();
    let dir = std::env::temp_dir().join(format!("loadtest-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");
    let base = format!("http://{}", sfu.http);
    let (code, out, err, _) = loadtest(
        &[
            "--sfu",
            &base,
            "--room",
            "loadtest-churn",
            "--classrooms",
            "3",
            "--churn",
            "0.5",
            "--duration",
            "10s",
            "--profile",
            "town-4m",
            "--quiet",
            "--report",
            report_path.to_str().unwrap(),
        ],
        &sfu.secret,
        Duration::from_secs(250),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report.mode, "churn");
    let churn = report.churn.as_ref().expect("churn figures");
    // one leave and one join every 2 s, none in the last 2 s: 3 or 4 in 10 s
    assert!((3..=4).contains(&churn.leaves), "{churn:?}");
    assert_eq!(churn.joins, churn.leaves, "{churn:?}");
    assert_eq!(churn.failed_joins, 0);
    let left: Vec<_> = report
        .classrooms
        .iter()
        .filter(|c| c.left_at_s.is_some())
        .collect();
    assert_eq!(left.len(), churn.leaves);
    assert_eq!(report.classrooms.len(), 3 + churn.joins);
    for c in &report.classrooms {
        assert!(c.frames_complete > 0, "{}: no frames", c.name);
        if let Some(l) = c.left_at_s {
            assert!(l > c.joined_at_s);
        }
    }
    // as many present at the end as at the start
    assert_eq!(
        report.classrooms.len() - left.len(),
        3,
        "three classrooms present at the end"
    );
}
