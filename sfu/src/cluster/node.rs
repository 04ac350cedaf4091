//! This node in a cluster: its heartbeat in the directory, the relay endpoint, the edges it
//! serves as a room's origin and the origins it relays rooms from. Async glue between the
//! directory, the QUIC links and the media loop (which makes every forwarding decision).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::directory::{Directory, NodeInfo, NodeLoad, OriginClaim, RoomEntry};
use super::link::{NodeIdentity, RelayConn, RelayEndpoint, RelayTls};
use super::load::CpuSampler;
use super::placement::{place_classroom, place_teacher, Place};
use super::wire::Control;
use crate::media::snapshot::RelayInfo;
use crate::media::{Command, MediaHandle, RelaySend};
use crate::metrics::Metrics;

/// How a node joins a cluster (`sfu serve --cluster ...`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub node_id: String,
    pub region: String,
    /// `redis://host:port`.
    pub redis: String,
    /// Where the relay endpoint listens (UDP, QUIC) and the address other nodes dial.
    pub relay_bind: SocketAddr,
    pub relay_advertise: SocketAddr,
    /// The base URL other nodes redirect clients to (`http://host:port`).
    pub public_http: String,
    pub tls: RelayTls,
    pub secret: String,
    /// A node that misses heartbeats this long is gone (its rooms may be taken over).
    pub ttl: Duration,
    pub heartbeat: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster directory: {0}")]
    Directory(#[from] super::directory::DirectoryError),
    #[error("relay endpoint: {0}")]
    Link(#[from] super::link::LinkError),
}

/// What a WHIP/WHEP request should do in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Here,
    /// Serve it on another node: redirect to this base URL.
    Elsewhere(String),
}

struct OriginConn {
    conn: RelayConn,
}

type OriginSlot = Arc<tokio::sync::Mutex<Option<Arc<OriginConn>>>>;

pub struct ClusterNode {
    settings: ClusterSettings,
    dir: Directory,
    endpoint: RelayEndpoint,
    media: MediaHandle,
    metrics: Arc<Metrics>,
    next_link: AtomicU64,
    /// Origin node id → the one connection this node relays rooms over. Each slot has its own
    /// lock, held while connecting, so a dead origin slows only the rooms it held.
    origins: Mutex<HashMap<String, OriginSlot>>,
    /// Rooms this node relays from their origin (each has an upstream task).
    relayed: Mutex<HashSet<String>>,
    /// Connections of edges that relay rooms from this node (for their stats).
    edges: Mutex<HashMap<u64, RelayConn>>,
    cpu: Mutex<CpuSampler>,
    last_forwarded: Mutex<(Instant, u64)>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterNode {
    /// Joins the cluster: reaches the directory, binds the relay port, registers, and starts
    /// the heartbeat and the relay listener.
    pub async fn start(
        mut settings: ClusterSettings,
        media: MediaHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ClusterNode>, ClusterError> {
        let dir = Directory::connect(&settings.redis, settings.ttl).await?;
        let endpoint = RelayEndpoint::bind(
            settings.relay_bind,
            &settings.tls,
            NodeIdentity {
                id: settings.node_id.clone(),
                region: settings.region.clone(),
                secret: settings.secret.clone(),
            },
        )?;
        if settings.relay_advertise.port() == 0 {
            settings
                .relay_advertise
                .set_port(endpoint.local_addr().port());
        }
        let node = Arc::new(ClusterNode {
            settings,
            dir,
            endpoint,
            media,
            metrics: metrics.clone(),
            next_link: AtomicU64::new(1),
            origins: Mutex::new(HashMap::new()),
            relayed: Mutex::new(HashSet::new()),
            edges: Mutex::new(HashMap::new()),
            cpu: Mutex::new(CpuSampler::new()),
            last_forwarded: Mutex::new((Instant::now(), metrics.packets_out.get())),
        });
        // A node restarting under the same id drops what its previous run held (that run's
        // rooms died with it) before announcing itself.
        node.dir.leave(&node.settings.node_id).await?;
        node.dir.heartbeat(&node.info()).await?;
        info!(
            node = node.settings.node_id,
            region = node.settings.region,
            relay = %node.endpoint.local_addr(),
            "joined the cluster"
        );
        tokio::spawn(node.clone().heartbeat_loop());
        tokio::spawn(node.clone().accept_loop());
        Ok(node)
    }

    pub fn id(&self) -> &str {
        &self.settings.node_id
    }

    fn info(&self) -> NodeInfo {
        let now = Instant::now();
        let forwarded = self.metrics.packets_out.get();
        let pps = {
            let mut last = self.last_forwarded.lock().expect("not poisoned");
            let dt = now.saturating_duration_since(last.0).as_secs_f64();
            let pps = if dt > 0.0 {
                forwarded.saturating_sub(last.1) as f64 / dt
            } else {
                0.0
            };
            *last = (now, forwarded);
            pps
        };
        let classrooms = ["classroom", "observer", "teacher", "admin"]
            .iter()
            .map(|r| {
                self.metrics
                    .peers
                    .with_label_values(&["subscribe", r])
                    .get()
                    .max(0) as u32
            })
            .sum();
        NodeInfo {
            id: self.settings.node_id.clone(),
            region: self.settings.region.clone(),
            http: self.settings.public_http.clone(),
            relay: self.settings.relay_advertise,
            load: NodeLoad {
                cpu: self
                    .cpu
                    .lock()
                    .expect("not poisoned")
                    .sample()
                    .unwrap_or(0.0),
                forwarded_pps: pps,
                classrooms,
                rooms: self.metrics.rooms.get().max(0) as u32,
            },
            updated_ms: unix_ms(),
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            self.reclaim_origins().await;
            match self.dir.heartbeat(&self.info()).await {
                Ok(()) if failing => {
                    info!("cluster directory reachable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    warn!("cluster heartbeat failed: {e}");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Rooms whose teacher publishes here stay claimed: a claim that lapsed while this node
    /// could not reach Redis (or was stalled) is taken back, so edges find their origin again.
    async fn reclaim_origins(&self) {
        let Ok(rooms) = self.media.call(Command::Presence).await else {
            return;
        };
        let me = self.settings.node_id.as_str();
        for r in rooms {
            if !r.teaching {
                continue;
            }
            if let Ok(OriginClaim::Held(other)) = self.dir.claim_origin(&r.room, me).await {
                debug!(
                    room = r.room,
                    other, "another node holds a room taught here"
                );
            }
        }
    }

    /// Clean shutdown: leave the directory so other nodes take over at once.
    pub async fn leave(&self) {
        if let Err(e) = self.dir.leave(&self.settings.node_id).await {
            warn!("leaving the cluster directory: {e}");
        }
        self.endpoint.close();
    }

    /// Where a WHIP (teacher or classroom feed) or WHEP request for `room` belongs. A request
    /// that another node already placed (`placed`) stays here.
    #[allow(clippy::too_many_arguments)]
    pub async fn place(
        self: &Arc<Self>,
        room: &str,
        teaches: bool,
        publish: bool,
        region: Option<&str>,
        named_origin: Option<&str>,
        placed: bool,
    ) -> Placement {
        let me = self.settings.node_id.as_str();
        let nodes = match self.dir.nodes().await {
            Ok(n) => n,
            Err(e) => {
                // Without the directory the node still serves what reaches it.
                warn!("placement without the directory: {e}");
                return Placement::Here;
            }
        };
        let origin = self.dir.origin(room).await.ok().flatten();
        // The lesson lives on the room's origin (the teacher's console too); classrooms watch
        // and publish their feeds on the least-loaded node of their region, which relays the
        // feeds to the origin.
        let origin_side = teaches;
        // The scheduler may name the node a lesson is taught from: the teacher goes there
        // while that node is alive and nobody else holds the room.
        let named = named_origin
            .filter(|_| teaches && publish && origin.is_none())
            .and_then(|n| nodes.iter().find(|x| x.id == n));
        let place = if placed {
            Place::Here
        } else if let Some(n) = named {
            if n.id == me {
                Place::Here
            } else {
                Place::Redirect(n.clone())
            }
        } else if origin_side {
            place_teacher(&nodes, me, origin.as_deref(), region)
        } else {
            place_classroom(&nodes, me, region)
        };
        if let Place::Redirect(n) = place {
            return Placement::Elsewhere(n.http);
        }
        if teaches && publish {
            match self.dir.claim_origin(room, me).await {
                Ok(OriginClaim::Mine) => {
                    self.relayed.lock().expect("not poisoned").remove(room);
                }
                Ok(OriginClaim::Held(other)) if !placed => {
                    if let Some(n) = nodes.iter().find(|n| n.id == other) {
                        return Placement::Elsewhere(n.http.clone());
                    }
                }
                Ok(OriginClaim::Held(_)) => {}
                Err(e) => warn!(room, "claiming the room's origin: {e}"),
            }
        } else if origin.as_deref() != Some(me) {
            self.ensure_upstream(room);
        }
        Placement::Here
    }

    /// Relay `room` from its origin, if this node is not its origin and does not relay it yet.
    pub fn ensure_upstream(self: &Arc<Self>, room: &str) {
        if !self
            .relayed
            .lock()
            .expect("not poisoned")
            .insert(room.to_string())
        {
            return;
        }
        tokio::spawn(self.clone().upstream_loop(room.to_string()));
    }

    fn relays(&self, room: &str) -> bool {
        self.relayed.lock().expect("not poisoned").contains(room)
    }

    /// Keeps `room` relayed from whichever node is its origin, across origin failures.
    async fn upstream_loop(self: Arc<Self>, room: String) {
        let me = self.settings.node_id.clone();
        let mut idle_since: Option<Instant> = None;
        // The origin whose connection just dropped, and when (Unix ms): it is dialled again only
        // once its heartbeat shows it alive after that (a healed partition), not while the
        // directory merely has not expired it yet (a dead node would cost a connect timeout).
        let mut lost: Option<(String, u64)> = None;
        while self.relays(&room) {
            if !self.room_watched(&room, &mut idle_since).await {
                break;
            }
            let origin = match self.dir.origin(&room).await {
                Ok(Some(o)) if o != me => {
                    if let Some((gone, at)) = &lost {
                        let heard_since = match self.dir.node(gone).await {
                            Ok(Some(n)) => n.updated_ms > *at,
                            _ => false,
                        };
                        if *gone == o && !heard_since {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                    o
                }
                Ok(Some(_)) => break,
                Ok(None) => {
                    // No live origin (the teacher has not started, or its node died and the
                    // teacher has not republished yet).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    debug!(room, "directory: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let conn = match self.origin_conn(&origin).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(room, origin, "relay connection: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            if conn
                .conn
                .send_control(&Control::Subscribe { room: room.clone() })
                .await
                .is_err()
            {
                continue;
            }
            let _ = self.dir.add_edge(&room, &me).await;
            info!(room, origin, "relaying from the origin");
            // Stay until the connection drops, the origin changes or nobody watches here.
            loop {
                tokio::select! {
                    _ = conn.conn.closed() => {
                        lost = Some((origin.clone(), unix_ms()));
                        break;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if !self.relays(&room) || !self.room_watched(&room, &mut idle_since).await {
                    let _ = conn
                        .conn
                        .send_control(&Control::Unsubscribe { room: room.clone() })
                        .await;
                    break;
                }
                match self.dir.origin(&room).await {
                    Ok(Some(o)) if o != origin => {
                        let _ = conn
                            .conn
                            .send_control(&Control::Unsubscribe { room: room.clone() })
                            .await;
                        break;
                    }
                    _ => {}
                }
            }
        }
        self.relayed.lock().expect("not poisoned").remove(&room);
        let _ = self.dir.remove_edge(&room, &me).await;
        debug!(room, "no longer relayed here");
    }

    /// Is anyone here still watching `room`? Relaying stops after a minute without viewers.
    async fn room_watched(&self, room: &str, idle_since: &mut Option<Instant>) -> bool {
        let watched = match self.media.call(Command::Presence).await {
            Ok(rooms) => rooms.iter().any(|r| r.room == room && r.viewers > 0),
            Err(_) => return false,
        };
        if watched {
            *idle_since = None;
            return true;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        since.elapsed() < Duration::from_secs(60)
    }

    /// The one connection to `origin` (opened on first use), with its readers feeding the
    /// media loop.
    async fn origin_conn(self: &Arc<Self>, origin: &str) -> Result<Arc<OriginConn>, String> {
        let slot = self
            .origins
            .lock()
            .expect("not poisoned")
            .entry(origin.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.conn.quic().close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let node = self
            .dir
            .node(origin)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("origin {origin} is not in the directory"))?;
        let conn = self
            .endpoint
            .connect(node.relay)
            .await
            .map_err(|e| e.to_string())?;
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let c = Arc::new(OriginConn { conn: conn.clone() });
        *slot = Some(c.clone());
        tokio::spawn(write_loop(conn.clone(), rx));
        // Control from the origin.
        let media = self.media.clone();
        let peer = origin.to_string();
        let ctl_conn = conn.clone();
        tokio::spawn(async move {
            loop {
                match ctl_conn.recv_control().await {
                    Ok(Control::Tracks { room, tracks }) => {
                        let _ = media.send(Command::UpstreamTracks {
                            link,
                            peer: peer.clone(),
                            room,
                            tracks,
                            tx: tx.clone(),
                            from_edge: false,
                        });
                    }
                    Ok(Control::Stage { room, stage, muted }) => {
                        let _ = media.send(Command::UpstreamStage {
                            link,
                            room,
                            stage,
                            muted,
                        });
                    }
                    Ok(Control::Gone { room, reason }) => {
                        debug!(room, reason, "origin no longer serves the room");
                        let _ = media.send(Command::UpstreamTracks {
                            link,
                            peer: peer.clone(),
                            room,
                            tracks: vec![],
                            tx: tx.clone(),
                            from_edge: false,
                        });
                    }
                    // What the origin needs of this node's classroom feeds.
                    Ok(
                        msg @ (Control::Demand { .. }
                        | Control::Keyframe { .. }
                        | Control::Nack { .. }),
                    ) => {
                        let _ = media.send(Command::RelayControl { link, msg });
                    }
                    Ok(other) => debug!(?other, "unexpected message from an origin"),
                    Err(e) => {
                        let _ = media.send(Command::UpstreamLost {
                            link,
                            why: e.to_string(),
                        });
                        break;
                    }
                }
            }
        });
        // Media from the origin.
        let media = self.media.clone();
        tokio::spawn(async move {
            while let Ok(pkt) = conn.recv_packet().await {
                if media.send(Command::UpstreamPacket { link, pkt }).is_err() {
                    break;
                }
            }
        });
        Ok(c)
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            match incoming {
                Ok(conn) => {
                    tokio::spawn(self.clone().serve_edge(conn));
                }
                Err(e) => {
                    self.metrics
                        .http_rejections
                        .with_label_values(&["relay"])
                        .inc();
                    warn!("relay connection refused: {e}");
                }
            }
        }
    }

    /// An edge connected: it subscribes to rooms this node is the origin of.
    async fn serve_edge(self: Arc<Self>, conn: RelayConn) {
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let peer = conn.peer().to_string();
        info!(peer, link, "edge connected");
        self.edges
            .lock()
            .expect("not poisoned")
            .insert(link, conn.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(conn.clone(), rx));
        // Classroom feeds published at the edge.
        let media = self.media.clone();
        let feeds = conn.clone();
        tokio::spawn(async move {
            while let Ok(pkt) = feeds.recv_packet().await {
                if media.send(Command::UpstreamPacket { link, pkt }).is_err() {
                    break;
                }
            }
        });
        loop {
            match conn.recv_control().await {
                Ok(Control::Tracks { room, tracks }) => {
                    let _ = self.media.send(Command::UpstreamTracks {
                        link,
                        peer: peer.clone(),
                        room,
                        tracks,
                        tx: tx.clone(),
                        from_edge: true,
                    });
                }
                Ok(Control::Subscribe { room }) => {
                    let _ = self.media.send(Command::RelayAttach {
                        link,
                        peer: peer.clone(),
                        room,
                        tx: tx.clone(),
                    });
                }
                Ok(Control::Unsubscribe { room }) => {
                    let _ = self.media.send(Command::RelayDetach {
                        link,
                        room: Some(room),
                    });
                }
                Ok(
                    msg
                    @ (Control::Demand { .. } | Control::Keyframe { .. } | Control::Nack { .. }),
                ) => {
                    let _ = self.media.send(Command::RelayControl { link, msg });
                }
                Ok(other) => debug!(peer, ?other, "unexpected message from an edge"),
                Err(e) => {
                    info!(peer, link, "edge disconnected: {e}");
                    break;
                }
            }
        }
        let _ = self.media.send(Command::RelayDetach { link, room: None });
        let _ = self.media.send(Command::UpstreamLost {
            link,
            why: "the edge disconnected".into(),
        });
        self.edges.lock().expect("not poisoned").remove(&link);
    }

    /// `/api/cluster`: the nodes, the rooms' origins and edges, and this node's relay hops.
    pub async fn snapshot(&self) -> ClusterSnapshot {
        let nodes = self.dir.nodes().await.unwrap_or_default();
        let rooms = self.dir.rooms().await.unwrap_or_default();
        let relays = self.media.call(Command::Relays).await.unwrap_or_default();
        let mut links = vec![];
        let slots: Vec<(String, OriginSlot)> = self
            .origins
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(o, s)| (o.clone(), s.clone()))
            .collect();
        for (origin, slot) in slots {
            // A slot being connected right now is skipped rather than waited for.
            if let Ok(g) = slot.try_lock() {
                if let Some(c) = g.as_ref() {
                    links.push(LinkSnapshot::of(&origin, "origin", &c.conn));
                }
            }
        }
        for c in self.edges.lock().expect("not poisoned").values() {
            links.push(LinkSnapshot::of(c.peer(), "edge", c));
        }
        ClusterSnapshot {
            node: self.settings.node_id.clone(),
            region: self.settings.region.clone(),
            nodes,
            rooms,
            links,
            relays,
        }
    }
}

/// Sends what the media loop queues for a connection: media as datagrams, control in order.
async fn write_loop(conn: RelayConn, mut rx: mpsc::UnboundedReceiver<RelaySend>) {
    while let Some(m) = rx.recv().await {
        match m {
            RelaySend::Packet(p) => {
                let _ = conn.send_packet(&p);
            }
            RelaySend::Control(c) => {
                if conn.send_control(&c).await.is_err() {
                    break;
                }
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LinkSnapshot {
    pub peer: String,
    /// `origin`: this node relays rooms from that node; `edge`: that node relays from here.
    pub role: String,
    pub rtt_ms: f64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// Datagrams not sent (too big, or the send buffer full) and received malformed.
    pub datagrams_dropped: u64,
    pub datagrams_malformed: u64,
    /// QUIC packets lost on the path.
    pub lost_packets: u64,
}

impl LinkSnapshot {
    fn of(peer: &str, role: &str, c: &RelayConn) -> Self {
        let st = c.stats();
        LinkSnapshot {
            peer: peer.to_string(),
            role: role.to_string(),
            rtt_ms: st.rtt.as_secs_f64() * 1000.0,
            datagrams_sent: st.sent_datagrams,
            datagrams_received: st.received_datagrams,
            datagrams_dropped: st.dropped_datagrams,
            datagrams_malformed: st.malformed_datagrams,
            lost_packets: st.lost_packets,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClusterSnapshot {
    pub node: String,
    pub region: String,
    pub nodes: Vec<NodeInfo>,
    pub rooms: Vec<RoomEntry>,
    pub links: Vec<LinkSnapshot>,
    pub relays: Vec<RelayInfo>,
}

/// The certificate files a node finds in a folder made by `sfu cluster-certs`.
pub fn tls_in(dir: &std::path::Path, node: &str) -> RelayTls {
    RelayTls {
        cert: dir.join(format!("{node}.pem")),
        key: dir.join(format!("{node}.key")),
        ca: dir.join("ca.pem"),
    }
}
