//! Janus side by side: `loadtest/compare.sh` runs the same small broadcast through our SFU and
//! through Janus's Streaming plugin (started by the load generator) in a network namespace the
//! script makes and removes, and prints both. The reports must hold every figure for both
//! targets, the clean links must lose nothing after retransmission on either, and Janus must
//! repair the lossy links too (its retransmission buffer needs our receivers' RTT reports).
//!
//! Needs root (or passwordless sudo) for `ip netns`, and the `janus` package (`make test`
//! installs it).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use loadtest::report::Report;

fn bin(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // target/debug/deps/janus-xxxx → target/debug/<name>
    let exe = std::env::current_exe().expect("test exe");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        p.exists(),
        "{} not found: build it first (`cargo build -p {name}`, as `make test` does) or set {env}",
        p.display()
    );
    p
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn compare_runs_our_sfu_and_janus_side_by_side() {
    let out = std::env::temp_dir().join(format!("loadtest-compare-{}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compare.sh");
    let mut cmd = if is_root() {
        Command::new("env")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "env"]);
        c
    };
    cmd.arg(format!("SFU_BIN={}", bin("SFU_BIN", "sfu").display()))
        .arg(format!(
            "LOADTEST_BIN={}",
            bin("LOADTEST_BIN", "loadtest").display()
        ))
        .arg(format!("COMPARE_OUT={}", out.display()))
        .arg(&script)
        .args([
            "--classrooms",
            "4",
            "--duration",
            "10s",
            "--mix",
            "clean:1,rural-2m:1",
            "--quiet",
        ]);
    let t0 = Instant::now();
    let run = cmd.output().expect("run compare.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let logs = ["loadtest-sfu.log", "loadtest-janus.log", "sfu.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(out.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "--- {f}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        run.status.success(),
        "compare.sh failed ({}), needs root or `sudo -n` for ip netns:\n{stdout}\n{stderr}\n{logs}",
        run.status
    );
    // two runs of 10 s, their setup and teardown, on a loaded machine
    assert!(
        t0.elapsed() < Duration::from_secs(240),
        "took {:?}",
        t0.elapsed()
    );

    let read = |name: &str| -> Report {
        let text = std::fs::read_to_string(out.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{stdout}\n{logs}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let (ours, janus) = (read("sfu.json"), read("janus.json"));
    assert_eq!(ours.target, "sfu");
    assert_eq!(janus.target, "janus");
    for r in [&ours, &janus] {
        let t = &r.target;
        assert_eq!(r.joined_classrooms, 4, "{t}: {:?}", r.failed_joins);
        assert_eq!(r.classrooms.len(), 4);
        let s = &r.sfu_process;
        assert!(s.pid.is_some(), "{t}: no server pid");
        assert!(
            s.cpu_pct_mean.is_some_and(|c| c > 0.0),
            "{t}: no server CPU"
        );
        assert!(s.rss_mb_max.is_some_and(|m| m > 1.0), "{t}: no server RSS");
        assert!(
            s.relayed_packets.is_some_and(|p| p > 1000.0),
            "{t}: packets toward classrooms {:?}",
            s.relayed_packets
        );
        assert!(s.relayed_per_core_second.is_some_and(|p| p > 0.0));
        for c in &r.classrooms {
            assert!(
                c.latency_ms.p50.is_some() && c.latency_unmatched == 0,
                "{t} {}: latency not measured",
                c.name
            );
            assert!(c.frames_complete > 0, "{t} {}: no frame", c.name);
            if c.profile == "clean" {
                assert_eq!(
                    c.loss_after_retransmission_pct, 0.0,
                    "{t} {}: lost packets on a clean link",
                    c.name
                );
            }
        }
    }
    // Janus repairs the lossy links: retransmissions arrive and most of the loss is filled
    for c in janus.classrooms.iter().filter(|c| c.profile == "rural-2m") {
        assert!(c.rtx_packets > 0, "janus {}: no retransmission", c.name);
        assert!(
            c.loss_after_retransmission_pct < c.loss_before_retransmission_pct / 2.0,
            "janus {}: loss {} % before and {} % after retransmission",
            c.name,
            c.loss_before_retransmission_pct,
            c.loss_after_retransmission_pct
        );
    }
    // ours forwards /metrics too
    assert!(ours
        .sfu_process
        .forwarded_packets
        .is_some_and(|f| f > 1000.0));
    assert!(
        stdout.contains("packets per server core-second")
            && stdout.contains("efficiency (packets per server core-second): ours is"),
        "no comparison table:\n{stdout}"
    );
    let table = std::fs::read_to_string(out.join("compare.txt")).unwrap();
    assert!(table.contains("janus") && table.contains("server CPU per packet"));
    // the namespace is gone
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("lt-compare-"),
        "compare.sh left its network namespace behind"
    );
    let _ = std::fs::remove_dir_all(&out);
}
