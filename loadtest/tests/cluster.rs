//! One lesson across SFU nodes: `loadtest/cluster.sh` runs a few classrooms on one node alone,
//! then as many per edge over two edges of an origin (a `redis-server` and four SFU processes
//! on loopback, started by the script), and prints both. The cluster report must hold the
//! origin's egress and every edge's copies and hop latency, and the origin must relay at most
//! one copy of the teacher's packets to each edge whatever the number of classrooms there.
//!
//! Needs `redis-server` (`make test` installs it) and the debug `sfu` and `loadtest` binaries.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use loadtest::report::Report;

fn bin(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // target/debug/deps/cluster-xxxx → target/debug/<name>
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

#[test]
fn cluster_run_reports_origin_egress_copies_and_hop_latency() {
    let out = std::env::temp_dir().join(format!("loadtest-cluster-{}", std::process::id()));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster.sh");
    let t0 = Instant::now();
    let run = Command::new(&script)
        .env("SFU_BIN", bin("SFU_BIN", "sfu"))
        .env("LOADTEST_BIN", bin("LOADTEST_BIN", "loadtest"))
        .env("CLUSTER_OUT", &out)
        .args([
            "--classrooms",
            "2",
            "--edges",
            "2",
            "--duration",
            "12s",
            "--profile",
            "clean",
            "--quiet",
        ])
        .output()
        .expect("run cluster.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let logs = [
        "loadtest-one.log",
        "loadtest-cluster.log",
        "sfu-a.log",
        "sfu-b.log",
    ]
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
        "cluster.sh failed ({}):\n{stdout}\n{stderr}\n{logs}",
        run.status
    );
    // two runs of 12 s, five servers started and stopped, on a loaded machine
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
    let (one, cluster) = (read("one.json"), read("cluster.json"));

    // One node alone: every packet goes to its own viewers, nothing is relayed.
    assert_eq!(one.joined_classrooms, 2, "{:?}", one.failed_joins);
    let c1 = one.cluster.as_ref().expect("one node: cluster figures");
    assert!(c1.edges.is_empty());
    assert!(c1.origin.teacher_packets_per_s > 50.0, "{c1:?}");
    assert!(c1.origin.viewer_packets_per_s > 50.0, "{c1:?}");
    assert_eq!(c1.origin.relayed_packets_per_s, 0.0);

    // The cluster: the classrooms played on the edges, the origin fed each edge once.
    assert_eq!(cluster.joined_classrooms, 4, "{:?}", cluster.failed_joins);
    for c in &cluster.classrooms {
        assert!(c.frames_complete > 0, "{}: no frame on its edge", c.name);
        assert!(
            c.latency_ms.p50.is_some(),
            "{}: latency not measured",
            c.name
        );
    }
    let cc = cluster.cluster.as_ref().expect("cluster figures");
    assert_eq!(cc.origin.node.as_deref(), Some("a"));
    assert!(cc.window_s > 2.0, "window {}", cc.window_s);
    let teacher = cc.origin.teacher_packets_per_s;
    assert!(
        teacher > 50.0,
        "the teacher's media reached the origin: {cc:?}"
    );
    assert!(
        cc.origin.viewer_packets_per_s < 1.0,
        "the origin has no WebRTC viewers of its own: {cc:?}"
    );
    assert!(cc.origin.relayed_kbps.is_some_and(|k| k > 0.0), "{cc:?}");
    assert_eq!(cc.edges.len(), 2);
    let nodes: Vec<_> = cc.edges.iter().map(|e| e.node.as_deref()).collect();
    assert_eq!(nodes, vec![Some("b"), Some("c")]);
    for e in &cc.edges {
        assert_eq!(e.classrooms, 2, "{e:?}");
        let copies = e.copies.expect("copies");
        // the counters are read a moment apart: allow what arrives in that moment
        assert!(
            copies > 0.0 && copies <= 1.05,
            "edge {:?} got {copies} copies of the teacher's packets",
            e.node
        );
        // the edge, not the origin, sends its classrooms their media
        assert!(e.forwarded_packets_per_s > 50.0, "{e:?}");
        assert!(
            e.hop_latency_p50_ms.is_some() && e.hop_latency_p99_ms.is_some(),
            "{e:?}"
        );
        assert!(
            e.hop_within_5ms_pct.is_some() && e.cpu_pct.is_some(),
            "{e:?}"
        );
    }
    assert!(cc.max_copies_per_edge.is_some_and(|c| c <= 1.05));
    // the relay to two edges carries at most two copies, whatever the classrooms
    assert!(
        cc.origin.relayed_packets_per_s <= 2.0 * 1.05 * teacher,
        "{cc:?}"
    );

    assert!(
        stdout.contains("origin egress, packets/s") && stdout.contains("most copies"),
        "no side-by-side table:\n{stdout}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
