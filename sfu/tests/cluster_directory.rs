//! The cluster directory against a real `redis-server` (started per test on a free loopback
//! port): membership and expiry, origin claims and takeover, edges, leave, hostile names,
//! and bounded failures when Redis is missing or stops answering.
//!
//! TTLs are 1 s and every wait is polled with a limit of several seconds, so the tests stay
//! steady on a loaded machine.

#[path = "common/redis_server.rs"]
mod redis_server;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use sfu::cluster::directory::{
    Directory, DirectoryError, NodeInfo, NodeLoad, OriginClaim, RoomEntry,
};
use tokio::task::JoinHandle;

const TTL: Duration = Duration::from_secs(1);
/// How long a test waits for something the TTL should bring about.
const PATIENCE: Duration = Duration::from_secs(15);

fn info(id: &str, region: &str, classrooms: u32) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        region: region.into(),
        http: format!("http://127.0.0.1:{}", 7800 + classrooms),
        relay: "127.0.0.1:7802".parse().unwrap(),
        load: NodeLoad {
            cpu: 0.25,
            forwarded_pps: 1234.5,
            classrooms,
            rooms: 1,
        },
        updated_ms: 0,
    }
}

async fn directory(redis: &RedisServer, prefix: &str) -> Directory {
    Directory::connect_with_prefix(&redis.url(), prefix, TTL)
        .await
        .expect("directory connects")
}

/// A node's heartbeat every 200 ms until dropped (as a killed node stops).
struct Beat(JoinHandle<()>);

impl Beat {
    async fn start(dir: &Directory, node: NodeInfo) -> Beat {
        dir.heartbeat(&node).await.expect("first heartbeat");
        let dir = dir.clone();
        Beat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Err(e) = dir.heartbeat(&node).await {
                    eprintln!("heartbeat of {}: {e}", node.id);
                }
            }
        }))
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls `check` every 100 ms until it is true; panics with `what` after `PATIENCE`.
async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn node_ids(dir: &Directory) -> Vec<String> {
    dir.nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect()
}

#[tokio::test]
async fn nodes_register_and_are_listed_sorted() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t1:").await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    dir.heartbeat(&info("node-b", "county-2", 5)).await.unwrap();
    dir.heartbeat(&info("node-a", "county-1", 7)).await.unwrap();
    let nodes = dir.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
    let a = &nodes[0];
    assert_eq!(a.region, "county-1");
    assert_eq!(a.load.classrooms, 7);
    assert_eq!(a.load.forwarded_pps, 1234.5);
    assert_eq!(a.http, "http://127.0.0.1:7807");
    assert!(
        a.updated_ms >= before,
        "heartbeat stamps updated_ms: {}",
        a.updated_ms
    );
    assert_eq!(
        dir.node("node-b").await.unwrap().unwrap().region,
        "county-2"
    );
    assert_eq!(dir.node("node-z").await.unwrap(), None);

    // A second heartbeat updates the load in place.
    dir.heartbeat(&info("node-a", "county-1", 9)).await.unwrap();
    assert_eq!(
        dir.node("node-a").await.unwrap().unwrap().load.classrooms,
        9
    );
    assert_eq!(node_ids(&dir).await, ["node-a", "node-b"]);

    // Another prefix sees nothing of it.
    let other = directory(&redis, "t1-other:").await;
    assert!(other.nodes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_node_without_heartbeat_expires_within_the_ttl() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t2:").await;
    let _a = Beat::start(&dir, info("a", "r", 0)).await;
    dir.heartbeat(&info("b", "r", 0)).await.unwrap();
    let registered = Instant::now();
    assert_eq!(node_ids(&dir).await, ["a", "b"]);
    eventually("b expires", || async { node_ids(&dir).await == ["a"] }).await;
    let gone_after = registered.elapsed();
    eprintln!("b gone {gone_after:?} after its only heartbeat (TTL {TTL:?})");
    assert!(
        gone_after >= TTL - Duration::from_millis(200),
        "b went before its TTL: {gone_after:?}"
    );
    assert_eq!(dir.node("b").await.unwrap(), None);
    // a, heartbeating, outlives several TTLs.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(node_ids(&dir).await, ["a"]);
}

#[tokio::test]
async fn origin_claims_are_exclusive_renewed_and_taken_over_from_a_dead_holder() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t3:").await;
    let a = Beat::start(&dir, info("a", "r", 0)).await;
    let _b = Beat::start(&dir, info("b", "r", 0)).await;

    assert_eq!(dir.origin("math").await.unwrap(), None);
    assert_eq!(
        dir.claim_origin("math", "a").await.unwrap(),
        OriginClaim::Mine
    );
    assert_eq!(
        dir.claim_origin("math", "b").await.unwrap(),
        OriginClaim::Held("a".into())
    );
    assert_eq!(
        dir.claim_origin("math", "a").await.unwrap(),
        OriginClaim::Mine
    );
    assert_eq!(dir.origin("math").await.unwrap().as_deref(), Some("a"));
    assert_eq!(dir.held("a").await.unwrap(), ["math"]);

    // a's heartbeat keeps its claim past several TTLs.
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(dir.origin("math").await.unwrap().as_deref(), Some("a"));
    assert_eq!(
        dir.claim_origin("math", "b").await.unwrap(),
        OriginClaim::Held("a".into())
    );

    // a is killed: b takes over within the TTL (plus polling).
    drop(a);
    let killed = Instant::now();
    eventually("b takes the room over", || async {
        dir.claim_origin("math", "b").await.unwrap() == OriginClaim::Mine
    })
    .await;
    let took = killed.elapsed();
    eprintln!("b took the room over {took:?} after a stopped (TTL {TTL:?})");
    assert!(took < TTL * 5, "takeover took {took:?}");
    assert_eq!(dir.origin("math").await.unwrap().as_deref(), Some("b"));
    assert!(dir.held("a").await.unwrap().is_empty());

    // a comes back (same id): the room stays b's, and a's heartbeat does not take it back.
    let _a = Beat::start(&dir, info("a", "r", 0)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(dir.origin("math").await.unwrap().as_deref(), Some("b"));
    assert_eq!(
        dir.claim_origin("math", "a").await.unwrap(),
        OriginClaim::Held("b".into())
    );
}

#[tokio::test]
async fn simultaneous_claims_give_one_origin() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t4:").await;
    let mut beats = Vec::new();
    for i in 0..8 {
        beats.push(Beat::start(&dir, info(&format!("n{i}"), "r", 0)).await);
    }
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.clone();
            tokio::spawn(async move { dir.claim_origin("race", &format!("n{i}")).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut holders = Vec::new();
    for (i, c) in claims.into_iter().enumerate() {
        match c.await.unwrap().unwrap() {
            OriginClaim::Mine => winners.push(format!("n{i}")),
            OriginClaim::Held(h) => holders.push(h),
        }
    }
    assert_eq!(winners.len(), 1, "winners {winners:?}");
    assert!(holders.iter().all(|h| *h == winners[0]), "{holders:?}");
    assert_eq!(dir.origin("race").await.unwrap(), Some(winners[0].clone()));
}

#[tokio::test]
async fn release_frees_the_room_only_for_its_holder() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t5:").await;
    let _a = Beat::start(&dir, info("a", "r", 0)).await;
    let _b = Beat::start(&dir, info("b", "r", 0)).await;
    assert_eq!(
        dir.claim_origin("art", "a").await.unwrap(),
        OriginClaim::Mine
    );
    dir.release_origin("art", "b").await.unwrap();
    assert_eq!(dir.origin("art").await.unwrap().as_deref(), Some("a"));
    dir.release_origin("art", "a").await.unwrap();
    assert_eq!(dir.origin("art").await.unwrap(), None);
    assert!(dir.held("a").await.unwrap().is_empty());
    // a's heartbeat must not bring the released claim back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(dir.origin("art").await.unwrap(), None);
    assert_eq!(
        dir.claim_origin("art", "b").await.unwrap(),
        OriginClaim::Mine
    );
}

#[tokio::test]
async fn edges_list_alive_nodes_only() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t6:").await;
    let _a = Beat::start(&dir, info("a", "r", 0)).await;
    let _b = Beat::start(&dir, info("b", "r", 0)).await;
    let c = Beat::start(&dir, info("c", "r", 0)).await;
    assert_eq!(
        dir.claim_origin("bio", "a").await.unwrap(),
        OriginClaim::Mine
    );
    dir.add_edge("bio", "c").await.unwrap();
    dir.add_edge("bio", "b").await.unwrap();
    dir.add_edge("bio", "b").await.unwrap();
    assert_eq!(dir.edges("bio").await.unwrap(), ["b", "c"]);
    assert_eq!(
        dir.rooms().await.unwrap(),
        [RoomEntry {
            room: "bio".into(),
            origin: Some("a".into()),
            edges: vec!["b".into(), "c".into()],
        }]
    );
    // Edges outlive several TTLs while their nodes heartbeat.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(dir.edges("bio").await.unwrap(), ["b", "c"]);

    drop(c);
    eventually("dead edge c leaves the list", || async {
        dir.edges("bio").await.unwrap() == ["b"]
    })
    .await;
    dir.remove_edge("bio", "b").await.unwrap();
    assert!(dir.edges("bio").await.unwrap().is_empty());
    assert_eq!(dir.rooms().await.unwrap()[0].edges, Vec::<String>::new());

    // A room with only an edge is listed; with nothing left it is not.
    dir.add_edge("chem", "b").await.unwrap();
    dir.release_origin("bio", "a").await.unwrap();
    let rooms = dir.rooms().await.unwrap();
    assert_eq!(
        rooms,
        [RoomEntry {
            room: "chem".into(),
            origin: None,
            edges: vec!["b".into()],
        }]
    );
}

#[tokio::test]
async fn leave_removes_the_node_its_claims_and_its_edges_at_once() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t7:").await;
    let a = Beat::start(&dir, info("a", "r", 0)).await;
    let _b = Beat::start(&dir, info("b", "r", 0)).await;
    assert_eq!(
        dir.claim_origin("one", "a").await.unwrap(),
        OriginClaim::Mine
    );
    assert_eq!(
        dir.claim_origin("two", "b").await.unwrap(),
        OriginClaim::Mine
    );
    dir.add_edge("two", "a").await.unwrap();
    drop(a);
    dir.leave("a").await.unwrap();
    // No waiting for the TTL.
    assert_eq!(node_ids(&dir).await, ["b"]);
    assert_eq!(dir.origin("one").await.unwrap(), None);
    assert!(dir.edges("two").await.unwrap().is_empty());
    assert_eq!(dir.origin("two").await.unwrap().as_deref(), Some("b"));
    assert_eq!(
        dir.claim_origin("one", "b").await.unwrap(),
        OriginClaim::Mine
    );
    // Leaving twice, or a node that never came, is fine.
    dir.leave("a").await.unwrap();
    dir.leave("never").await.unwrap();
}

#[tokio::test]
async fn hostile_names_stay_in_their_keys() {
    let redis = RedisServer::start();
    let dir = directory(&redis, "t8:").await;
    // Names that a plain join would turn into other keys or patterns.
    let evil_node = "x:origin:room*\r\n";
    let _e = Beat::start(&dir, info(evil_node, "r", 0)).await;
    let _n = Beat::start(&dir, info("n", "r", 0)).await;
    assert!(node_ids(&dir).await.contains(&evil_node.to_string()));
    for room in ["a:b", "a%3Ab", "edges:a", "空 教室", "*"] {
        assert_eq!(
            dir.claim_origin(room, evil_node).await.unwrap(),
            OriginClaim::Mine,
            "{room}"
        );
    }
    assert_eq!(dir.claim_origin("a", "n").await.unwrap(), OriginClaim::Mine);
    dir.add_edge("a:b", "n").await.unwrap();
    assert_eq!(dir.edges("a:b").await.unwrap(), ["n"]);
    assert!(dir.edges("a").await.unwrap().is_empty());
    let rooms: Vec<String> = dir
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.room)
        .collect();
    assert_eq!(rooms, ["*", "a", "a%3Ab", "a:b", "edges:a", "空 教室"]);
    assert_eq!(dir.origin("a:b").await.unwrap().as_deref(), Some(evil_node));

    for (room, node) in [("", "n"), ("r", ""), (&"x".repeat(300)[..], "n")] {
        let err = dir.claim_origin(room, node).await.unwrap_err();
        assert!(matches!(err, DirectoryError::BadName { .. }), "{err}");
    }
    let err = dir.heartbeat(&info("", "r", 0)).await.unwrap_err();
    assert!(err.to_string().contains("invalid node id"), "{err}");
}

#[tokio::test]
async fn unreachable_redis_fails_fast_with_a_clear_error() {
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let start = Instant::now();
    let err = Directory::connect(&url, TTL).await.unwrap_err();
    eprintln!("refused: {:?}: {err}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DirectoryError::Unreachable { .. } | DirectoryError::Timeout { .. }
        ),
        "{msg}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");

    // A server that accepts but never answers: a timeout, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://127.0.0.1:{}/", silent.local_addr().unwrap().port());
    let start = Instant::now();
    let err = Directory::connect(&url, TTL).await.unwrap_err();
    eprintln!("silent server: {:?}: {err}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            err,
            DirectoryError::Timeout { .. } | DirectoryError::Unreachable { .. }
        ),
        "{err}"
    );

    let err = Directory::connect("http://nope", TTL).await.unwrap_err();
    assert!(matches!(err, DirectoryError::BadUrl { .. }), "{err}");
    let err = Directory::connect(&url, Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::BadTtl(_)), "{err}");
}

#[tokio::test]
async fn operations_fail_in_bounded_time_when_redis_dies() {
    let mut redis = RedisServer::start();
    let dir = directory(&redis, "t9:").await;
    dir.heartbeat(&info("a", "r", 0)).await.unwrap();
    redis.kill();
    let start = Instant::now();
    let err = dir.heartbeat(&info("a", "r", 0)).await.unwrap_err();
    eprintln!("after Redis died: {:?}: {err}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("heartbeat"), "{err}");
    let start = Instant::now();
    assert!(dir.nodes().await.is_err());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn the_directory_reconnects_when_redis_comes_back() {
    let mut redis = RedisServer::start();
    let dir = directory(&redis, "t10:").await;
    dir.heartbeat(&info("a", "r", 0)).await.unwrap();
    redis.kill();
    assert!(dir.heartbeat(&info("a", "r", 0)).await.is_err());
    // Redis restarts empty on the same address: the next heartbeats register again.
    redis.restart();
    let took = eventually("heartbeat works again", || async {
        dir.heartbeat(&info("a", "r", 0)).await.is_ok()
    })
    .await;
    eprintln!("reconnected {took:?} after Redis restarted");
    assert_eq!(node_ids(&dir).await, ["a"]);
    assert_eq!(dir.claim_origin("m", "a").await.unwrap(), OriginClaim::Mine);
}
