//! A UDP relay that puts an emulated link between clients and one target (the SFU).
//!
//! Each client source address that sends to the relay gets its own upstream socket, connected to
//! the target, so the target sees one distinct peer per client. Datagrams from the client go
//! through the client's uplink [`Link`] to the target; datagrams from the target come back through
//! its downlink. The relay sends only to the target and to clients that sent to it. A client
//! may be given a target of its own before its first datagram ([`RelayHandle::route`]): servers
//! such as Janus give every peer connection its own port.
//!
//! One thread runs everything: a mio poll whose timeout is the earliest delivery deadline (a
//! binary heap of per-link deadlines), finished with a short sleep for the sub-millisecond part.
//! Packets leave about 0.1 ms after their model time on an idle machine, later only by scheduling
//! latency on a loaded one; the model's times are exact, so lateness never accumulates. With no
//! clients the relay sleeps in the poll; with clients and nothing in flight it wakes once a second
//! to check idle timeouts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::model::{Link, LinkConfig, LinkError, LinkStats};
use super::profile::{Direction, ProfileSpec};

/// Errors starting a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("bad link: {0}")]
    Link(#[from] LinkError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("relay I/O: {0}")]
    Io(#[from] io::Error),
}

/// Where schedule offsets (capacity steps) count from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScheduleOrigin {
    /// One clock for every client: the relay's start.
    #[default]
    RelayStart,
    /// Each client's own first datagram.
    ClientStart,
}

/// What to relay, and through which links.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where clients send; port 0 picks a free one (see [`RelayHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The only address datagrams are relayed to.
    pub target: SocketAddr,
    /// Target → client.
    pub downlink: LinkConfig,
    /// Client → target.
    pub uplink: LinkConfig,
    /// Seeds every client's links (derived per client and direction), for reproducible runs.
    pub seed: u64,
    pub schedule_origin: ScheduleOrigin,
    /// New client addresses beyond this are ignored (counted in `refused_datagrams`).
    pub max_clients: usize,
    /// A client with no traffic either way for this long is forgotten (its socket closed, its
    /// counters kept); `None` keeps every client until the relay stops.
    pub idle_timeout: Option<Duration>,
}

impl RelayConfig {
    /// A relay with no impairment; set `downlink` and `uplink`, or use [`RelayConfig::with_profile`].
    pub fn new(listen: SocketAddr, target: SocketAddr) -> Self {
        RelayConfig {
            listen,
            target,
            downlink: LinkConfig::default(),
            uplink: LinkConfig::default(),
            seed: 0,
            schedule_origin: ScheduleOrigin::RelayStart,
            max_clients: 1024,
            idle_timeout: Some(Duration::from_secs(120)),
        }
    }

    /// Both directions from a profile.
    pub fn with_profile(mut self, profile: &ProfileSpec) -> Result<Self, LinkError> {
        self.downlink = profile.link(Direction::Down)?;
        self.uplink = profile.link(Direction::Up)?;
        Ok(self)
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Counters for one client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStats {
    /// The client's address (where downlink datagrams go).
    pub client: SocketAddr,
    /// The upstream socket's address: the peer the target sees for this client.
    pub upstream: SocketAddr,
    /// Milliseconds after the relay started that the client first sent.
    pub first_seen_ms: u64,
    /// False once forgotten after `idle_timeout`.
    pub active: bool,
    pub uplink: LinkStats,
    pub downlink: LinkStats,
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayStats {
    pub elapsed_ms: u64,
    /// Every client seen, in order of first datagram.
    pub clients: Vec<ClientStats>,
    /// Sums over all clients.
    pub uplink: LinkStats,
    pub downlink: LinkStats,
    /// Datagrams from new clients beyond `max_clients`.
    pub refused_datagrams: u64,
    /// Datagrams the link delivered but the socket would not take (buffer full, unreachable).
    pub send_errors: u64,
}

impl RelayStats {
    pub fn client(&self, addr: SocketAddr) -> Option<&ClientStats> {
        self.clients.iter().find(|c| c.client == addr)
    }
}

/// Starts relays.
pub struct Relay;

impl Relay {
    /// Binds `config.listen` and starts relaying on a thread of its own.
    pub fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
        config.downlink.validate()?;
        config.uplink.validate()?;
        let socket = bind_listen(config.listen).map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = socket.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (commands, inbox) = mpsc::channel();
        let last = Arc::new(Mutex::new(RelayStats::default()));
        let worker = Worker::new(config, socket, poll, inbox, last.clone())?;
        let thread = std::thread::Builder::new()
            .name("link-relay".into())
            .spawn(move || worker.run())?;
        info!(%local_addr, "link relay started");
        Ok(RelayHandle {
            local_addr,
            commands,
            waker,
            last,
            thread: Some(thread),
        })
    }
}

/// A running relay; dropping it stops it.
pub struct RelayHandle {
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    last: Arc<Mutex<RelayStats>>,
    thread: Option<JoinHandle<()>>,
}

enum Command {
    Stats(mpsc::Sender<RelayStats>),
    Route {
        client: SocketAddr,
        target: SocketAddr,
        done: mpsc::Sender<()>,
    },
    Stop,
}

impl RelayHandle {
    /// The address clients send to (with the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Current counters (the final ones once the relay has stopped).
    pub fn stats(&self) -> RelayStats {
        let (tx, rx) = mpsc::channel();
        if self.commands.send(Command::Stats(tx)).is_ok() && self.waker.wake().is_ok() {
            if let Ok(stats) = rx.recv_timeout(Duration::from_secs(5)) {
                return stats;
            }
        }
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends `client`'s datagrams to `target` instead of the relay's target. Takes effect for a
    /// client not seen yet; returns once the relay has it, so a datagram sent afterwards is
    /// routed. False if the relay has stopped.
    pub fn route(&self, client: SocketAddr, target: SocketAddr) -> bool {
        let (done, rx) = mpsc::channel();
        self.commands
            .send(Command::Route {
                client,
                target,
                done,
            })
            .is_ok()
            && self.waker.wake().is_ok()
            && rx.recv_timeout(Duration::from_secs(5)).is_ok()
    }

    /// Stops relaying and returns the final counters.
    pub fn stop(mut self) -> RelayStats {
        self.shutdown();
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.commands.send(Command::Stop);
            let _ = self.waker.wake();
            if thread.join().is_err() {
                warn!("link relay thread panicked");
            }
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

const LISTEN: Token = Token(0);
const WAKE: Token = Token(1);
const FIRST_CLIENT: usize = 2;
/// Datagrams read from one socket before timers get a turn, so a flood cannot starve deliveries.
const READ_BUDGET: usize = 64;
const MAX_DATAGRAM: usize = 65_536;

struct Client {
    addr: SocketAddr,
    upstream: UdpSocket,
    upstream_addr: SocketAddr,
    uplink: Link,
    downlink: Link,
    first_seen: Instant,
    last_active: Instant,
}

struct Worker {
    config: RelayConfig,
    socket: UdpSocket,
    poll: Poll,
    inbox: mpsc::Receiver<Command>,
    last: Arc<Mutex<RelayStats>>,
    started: Instant,
    clients: HashMap<usize, Client>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Targets of their own for clients, by client address.
    routes: HashMap<SocketAddr, SocketAddr>,
    next_id: usize,
    /// Per-link delivery deadlines; stale entries are skipped when they fire.
    timers: BinaryHeap<Reverse<(Instant, usize, bool)>>,
    /// Sockets that may still hold datagrams (edge-triggered polling).
    readable: VecDeque<Token>,
    retired: Vec<ClientStats>,
    refused: u64,
    send_errors: u64,
    buf: Vec<u8>,
}

impl Worker {
    fn new(
        config: RelayConfig,
        mut socket: UdpSocket,
        poll: Poll,
        inbox: mpsc::Receiver<Command>,
        last: Arc<Mutex<RelayStats>>,
    ) -> io::Result<Self> {
        poll.registry()
            .register(&mut socket, LISTEN, Interest::READABLE)?;
        Ok(Worker {
            config,
            socket,
            poll,
            inbox,
            last,
            started: Instant::now(),
            clients: HashMap::new(),
            by_addr: HashMap::new(),
            routes: HashMap::new(),
            next_id: FIRST_CLIENT,
            timers: BinaryHeap::new(),
            readable: VecDeque::new(),
            retired: Vec::new(),
            refused: 0,
            send_errors: 0,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = self.started + SWEEP_EVERY;
        loop {
            let now = Instant::now();
            let timeout = if self.readable.is_empty() {
                let mut wake = self.timers.peek().map(|Reverse((t, _, _))| *t);
                if self.config.idle_timeout.is_some() && !self.clients.is_empty() {
                    wake = Some(wake.map_or(next_sweep, |w| w.min(next_sweep)));
                }
                wake.map(|t| precise_wait(t.saturating_duration_since(now)))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(error = %e, "link relay poll failed; stopping");
                    break;
                }
            }
            let mut stop = false;
            for event in events.iter() {
                if event.token() == WAKE {
                    stop |= self.commands();
                } else {
                    self.readable.push_back(event.token());
                }
            }
            if stop {
                break;
            }
            for _ in 0..self.readable.len() {
                let Some(token) = self.readable.pop_front() else {
                    break;
                };
                if self.read(token) {
                    self.readable.push_back(token);
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        let stats = self.snapshot();
        info!(
            clients = stats.clients.len(),
            up_delivered = stats.uplink.delivered_packets,
            down_delivered = stats.downlink.delivered_packets,
            "link relay stopped"
        );
        if let Ok(mut last) = self.last.lock() {
            *last = stats;
        }
    }

    /// Handles commands; true means stop.
    fn commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Stats(reply)) => {
                    let _ = reply.send(self.snapshot());
                }
                Ok(Command::Route {
                    client,
                    target,
                    done,
                }) => {
                    self.routes.insert(client, target);
                    let _ = done.send(());
                }
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return true,
                Err(mpsc::TryRecvError::Empty) => return false,
            }
        }
    }

    /// Reads up to the budget from one socket; true if it may hold more.
    fn read(&mut self, token: Token) -> bool {
        for _ in 0..READ_BUDGET {
            let now = Instant::now();
            if token == LISTEN {
                match self.socket.recv_from(&mut self.buf) {
                    Ok((n, from)) => self.client_datagram(now, from, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    // ICMP errors from earlier sends to a client surface here; keep going.
                    Err(e) => debug!(error = %e, "listen socket receive error"),
                }
            } else {
                let id = token.0;
                let Some(client) = self.clients.get_mut(&id) else {
                    return false;
                };
                match client.upstream.recv(&mut self.buf) {
                    Ok(n) => {
                        client.last_active = now;
                        let before = client.downlink.next_deadline();
                        let _ = client.downlink.push(now, self.buf[..n].to_vec());
                        let after = client.downlink.next_deadline();
                        if after != before {
                            if let Some(t) = after {
                                self.timers.push(Reverse((t, id, false)));
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    // The target is not listening (ICMP port unreachable); nothing to relay.
                    Err(e) => debug!(error = %e, "upstream receive error"),
                }
            }
        }
        true
    }

    fn client_datagram(&mut self, now: Instant, from: SocketAddr, n: usize) {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            None => match self.add_client(now, from) {
                Some(id) => id,
                None => {
                    self.refused += 1;
                    return;
                }
            },
        };
        let client = self.clients.get_mut(&id).expect("indexed client");
        client.last_active = now;
        let before = client.uplink.next_deadline();
        let _ = client.uplink.push(now, self.buf[..n].to_vec());
        let after = client.uplink.next_deadline();
        if after != before {
            if let Some(t) = after {
                self.timers.push(Reverse((t, id, true)));
            }
        }
    }

    fn add_client(&mut self, now: Instant, from: SocketAddr) -> Option<usize> {
        if self.clients.len() >= self.config.max_clients {
            return None;
        }
        let id = self.next_id;
        let index = (id - FIRST_CLIENT) as u64;
        let origin = match self.config.schedule_origin {
            ScheduleOrigin::RelayStart => self.started,
            ScheduleOrigin::ClientStart => now,
        };
        let seed = |dir: u64| mix_seed(self.config.seed, index * 2 + dir);
        let target = self
            .routes
            .get(&from)
            .copied()
            .unwrap_or(self.config.target);
        let made = (|| -> Result<Client, RelayError> {
            let mut upstream = UdpSocket::bind(upstream_bind(target))?;
            upstream.connect(target)?;
            self.poll
                .registry()
                .register(&mut upstream, Token(id), Interest::READABLE)?;
            Ok(Client {
                addr: from,
                upstream_addr: upstream.local_addr()?,
                upstream,
                uplink: Link::new(&self.config.uplink, origin, seed(0))?,
                downlink: Link::new(&self.config.downlink, origin, seed(1))?,
                first_seen: now,
                last_active: now,
            })
        })();
        match made {
            Ok(client) => {
                debug!(client = %from, upstream = %client.upstream_addr, "new client");
                self.next_id += 1;
                self.clients.insert(id, client);
                self.by_addr.insert(from, id);
                Some(id)
            }
            Err(e) => {
                warn!(client = %from, error = %e, "cannot open an upstream socket");
                None
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((due, id, up))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let Some(client) = self.clients.get_mut(&id) else {
                continue;
            };
            let link = if up {
                &mut client.uplink
            } else {
                &mut client.downlink
            };
            while let Some(packet) = link.poll(now) {
                let sent = if up {
                    client.upstream.send(&packet)
                } else {
                    self.socket.send_to(&packet, client.addr)
                };
                if let Err(e) = sent {
                    self.send_errors += 1;
                    debug!(error = %e, up, "send failed");
                }
            }
            if let Some(t) = link.next_deadline() {
                self.timers.push(Reverse((t, id, up)));
            }
        }
    }

    /// Forgets clients idle longer than the timeout with nothing in flight.
    fn sweep(&mut self, now: Instant) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                now.duration_since(c.last_active) > timeout
                    && c.uplink.is_idle()
                    && c.downlink.is_idle()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            let mut client = self.clients.remove(&id).expect("listed");
            self.by_addr.remove(&client.addr);
            let _ = self.poll.registry().deregister(&mut client.upstream);
            debug!(client = %client.addr, "idle client forgotten");
            let mut stats = self.client_stats(&client);
            stats.active = false;
            self.retired.push(stats);
        }
    }

    fn client_stats(&self, c: &Client) -> ClientStats {
        ClientStats {
            client: c.addr,
            upstream: c.upstream_addr,
            first_seen_ms: c.first_seen.duration_since(self.started).as_millis() as u64,
            active: true,
            uplink: c.uplink.stats(),
            downlink: c.downlink.stats(),
        }
    }

    fn snapshot(&self) -> RelayStats {
        let mut clients: Vec<(usize, ClientStats)> = self
            .clients
            .iter()
            .map(|(id, c)| (*id, self.client_stats(c)))
            .collect();
        clients.sort_by_key(|(id, _)| *id);
        let mut all = self.retired.clone();
        all.extend(clients.into_iter().map(|(_, s)| s));
        all.sort_by_key(|c| c.first_seen_ms);
        let mut stats = RelayStats {
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            refused_datagrams: self.refused,
            send_errors: self.send_errors,
            ..RelayStats::default()
        };
        for c in &all {
            stats.uplink.add(&c.uplink);
            stats.downlink.add(&c.downlink);
        }
        stats.clients = all;
        stats
    }
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The poll timeout for a deadline `wait` away. epoll counts whole milliseconds and mio rounds
/// up, which would make every packet up to 1 ms late; so poll for the whole milliseconds and
/// sleep the sub-millisecond rest (nanosleep, about 50 µs of slack) before a zero-timeout poll.
fn precise_wait(wait: Duration) -> Duration {
    const MS: Duration = Duration::from_millis(1);
    if wait >= MS {
        Duration::from_millis(wait.as_millis() as u64)
    } else {
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        Duration::ZERO
    }
}

/// Every client's uplink arrives, and every downlink leaves, through the listen socket: give it
/// large buffers (best effort: the kernel caps them at net.core.[rw]mem_max), so bursts are not
/// dropped by the kernel before the link model sees them.
fn bind_listen(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    const BUFFER: usize = 4 << 20;
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(BUFFER);
    let _ = socket.set_send_buffer_size(BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// Loopback targets get loopback upstream sockets; others let the kernel pick the source.
fn upstream_bind(target: SocketAddr) -> SocketAddr {
    let ip = match (target.ip().is_loopback(), target.ip()) {
        (true, ip) => ip,
        (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Distinct, well-spread seeds per client and direction (splitmix64).
fn mix_seed(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
