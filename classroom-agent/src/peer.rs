//! One str0m session on one UDP socket: the thread that feeds datagrams and time into the
//! `Rtc`, sends what it transmits, and hands events to a [`Handler`]. A mio `Waker` lets
//! other threads (GStreamer's appsink callbacks) wake it when they queued media.

use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::backoff::Backoff;
use crate::join::FetchError;
use crate::status::SessionStats;
use crate::whip::{
    ice_credentials, redirect_candidates, with_credentials, Endpoint, WhipClient, WhipError,
};

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// How long a session may take to connect (ICE and DTLS) before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence from the SFU for this long after connecting means it is gone (an SFU restart
/// forgets the session; its STUN answers and RTCP stop at once).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// Longest sleep between looks at the stop flag.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEnd {
    /// The agent is shutting down.
    Stopped,
    /// Connected, then lost the SFU.
    Lost(String),
    /// Never connected, or str0m failed.
    Failed(String),
}

/// What a session does with its events and when woken.
pub trait Handler {
    /// Each event from str0m.
    fn on_event(&mut self, rtc: &mut Rtc, event: Event, now: Instant);
    /// Each turn of the loop: write queued media, run timers.
    fn on_wake(&mut self, rtc: &mut Rtc, now: Instant);
}

/// A socket bound on the interface that routes to the SFU, with its poll and waker.
pub struct PeerSocket {
    socket: mio::net::UdpSocket,
    local: SocketAddr,
    poll: Poll,
    waker: Arc<Waker>,
    /// The session's byte counts at its previous stats (kept across ICE restarts, which go
    /// on with the same counts).
    totals: Option<(Instant, u64, u64)>,
}

impl PeerSocket {
    /// Binds a UDP socket on the local address the kernel would use to reach `host`.
    pub fn towards(host: &str) -> std::io::Result<PeerSocket> {
        let remote = (host, 9)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "SFU host has no address"))?;
        let probe = UdpSocket::bind(match remote {
            SocketAddr::V4(_) => "0.0.0.0:0",
            SocketAddr::V6(_) => "[::]:0",
        })?;
        probe.connect(remote)?;
        let ip = probe.local_addr()?.ip();
        let std_socket = UdpSocket::bind((ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let local = std_socket.local_addr()?;
        let mut socket = mio::net::UdpSocket::from_std(std_socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(PeerSocket {
            socket,
            local,
            poll,
            waker,
            totals: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A host candidate for this socket.
    pub fn candidate(&self) -> Result<Candidate, str0m::error::IceError> {
        Candidate::host(self.local, "udp")
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// Runs the session until it ends or `stop` is set. On stop the session is closed
    /// (str0m sends nothing more; the caller DELETEs it over HTTP).
    ///
    /// `resumed`: the session was connected before and its ICE was just restarted; it counts
    /// as connected again once ICE is, within [`RESTART_TIMEOUT`].
    pub fn run(
        &mut self,
        rtc: &mut Rtc,
        handler: &mut dyn Handler,
        stop: &AtomicBool,
        stats: &SessionStats,
        resumed: bool,
    ) -> PeerEnd {
        let end = self.run_inner(rtc, handler, stop, stats, resumed);
        stats.connected.store(false, Ordering::Relaxed);
        end
    }

    fn run_inner(
        &mut self,
        rtc: &mut Rtc,
        handler: &mut dyn Handler,
        stop: &AtomicBool,
        stats: &SessionStats,
        resumed: bool,
    ) -> PeerEnd {
        let started = Instant::now();
        let limit = if resumed {
            RESTART_TIMEOUT
        } else {
            CONNECT_TIMEOUT
        };
        let mut connected = false;
        let mut last_heard = started;
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 2000];
        loop {
            if stop.load(Ordering::Relaxed) {
                rtc.disconnect();
                return PeerEnd::Stopped;
            }
            let now = Instant::now();
            handler.on_wake(rtc, now);
            let deadline = loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        if let Err(e) = self.socket.send_to(&t.contents, t.destination) {
                            // A full buffer or a vanished route: the congestion controller
                            // sees the loss; nothing to do here.
                            tracing::trace!("send to {}: {e}", t.destination);
                        }
                    }
                    Ok(Output::Event(ev)) => {
                        match &ev {
                            Event::Connected => {
                                connected = true;
                                last_heard = now;
                                stats.connected.store(true, Ordering::Relaxed);
                                stats.connects.fetch_add(1, Ordering::Relaxed);
                            }
                            Event::PeerStats(ps) => {
                                record_peer_stats(stats, ps, &mut self.totals);
                            }
                            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                                return if connected {
                                    PeerEnd::Lost("ICE disconnected".into())
                                } else {
                                    PeerEnd::Failed("ICE disconnected before connecting".into())
                                };
                            }
                            _ => {}
                        }
                        handler.on_event(rtc, ev, now);
                    }
                    Err(e) => return PeerEnd::Failed(format!("str0m: {e}")),
                }
            };
            if !rtc.is_alive() {
                return if connected {
                    PeerEnd::Lost("session closed".into())
                } else {
                    PeerEnd::Failed("session closed before connecting".into())
                };
            }
            if !connected && now.duration_since(started) > limit {
                return PeerEnd::Failed(format!("not connected within {limit:?}"));
            }
            if connected && now.duration_since(last_heard) > SILENCE_LIMIT {
                return PeerEnd::Lost(format!("nothing from the SFU for {SILENCE_LIMIT:?}"));
            }
            let wait = deadline.saturating_duration_since(now).min(MAX_WAIT);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    return PeerEnd::Failed(format!("poll: {e}"));
                }
            }
            loop {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, source)) => {
                        let now = Instant::now();
                        last_heard = now;
                        let Ok(rcv) = Receive::new(Protocol::Udp, source, self.local, &buf[..n])
                        else {
                            continue;
                        };
                        if let Err(e) = rtc.handle_input(Input::Receive(now, rcv)) {
                            tracing::debug!("input from {source}: {e}");
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // ICMP errors (port unreachable while the SFU restarts) surface here.
                    Err(e) => {
                        tracing::trace!("recv: {e}");
                        break;
                    }
                }
            }
            // After an ICE restart, anything heard from the SFU means the path is back (str0m
            // need not report a state change: its ICE may never have left Connected).
            if resumed && !connected && last_heard > started {
                connected = true;
                stats.connected.store(true, Ordering::Relaxed);
                stats.ice_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::info!("ICE restart: connected again");
            }
            if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
                return PeerEnd::Failed(format!("str0m: {e}"));
            }
        }
    }
}

/// A session ready to be offered: its `Rtc` with local media added, the offer, and the
/// handler that will run it.
pub struct Prepared {
    pub rtc: Rtc,
    pub offer: SdpOffer,
    pub pending: SdpPendingOffer,
    pub handler: Box<dyn Handler>,
}

/// Sleeps up to `d`, returning early (true) when `stop` is set.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    stop.load(Ordering::Relaxed)
}

/// A session that lasted this long counts as having worked: the backoff starts over.
const STABLE: Duration = Duration::from_secs(10);
/// After an ICE restart, ICE must connect again within this long, else a new session.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a lost session's ICE restart is retried (while the SFU cannot be reached) before
/// a new session is made; the SFU keeps a silent session about this long.
const RESTART_WINDOW: Duration = Duration::from_secs(12);

/// Restarts a lost session's ICE (RFC 9725 section 4.4.1): new local credentials in a PATCH,
/// the SFU's new ones into the answer. Retried with backoff while the SFU cannot be reached;
/// gives up at once when it no longer knows the session.
fn restart_ice(
    client: &WhipClient,
    location: &url::Url,
    answer: &str,
    rtc: &mut Rtc,
    stop: &AtomicBool,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let began = Instant::now();
    loop {
        let mut api = rtc.sdp_api();
        let creds = api.ice_restart(true);
        let Some((_, pending)) = api.apply() else {
            return Err("no ICE restart offer".into());
        };
        match client.restart_ice(location, &creds.ufrag, &creds.pass) {
            Ok(frag) => {
                let (u, p) = ice_credentials(&frag)
                    .ok_or_else(|| format!("no credentials in the SFU's fragment {frag:?}"))?;
                let sdp = with_credentials(answer, &u, &p);
                let a = SdpAnswer::from_sdp_string(&sdp).map_err(|e| e.to_string())?;
                return rtc
                    .sdp_api()
                    .accept_answer(pending, a)
                    .map_err(|e| e.to_string());
            }
            Err(e) if e.is_permanent() => return Err(e.to_string()),
            Err(e) => {
                if began.elapsed() > RESTART_WINDOW {
                    return Err(format!("{e} (for {RESTART_WINDOW:?})"));
                }
                tracing::debug!("ICE restart: {e}");
                if sleep_unless_stopped(backoff.next_delay(), stop) {
                    return Err("stopped".into());
                }
            }
        }
    }
}

/// Puts a connection's stats into `/status`: the round trip, the loss on the way that carries
/// media (the far end's reports when sending, our own count when receiving), and the bytes on
/// the wire each way per second since the previous stats.
fn record_peer_stats(
    stats: &SessionStats,
    ps: &str0m::stats::PeerStats,
    last: &mut Option<(Instant, u64, u64)>,
) {
    if let Some(rtt) = ps.rtt {
        stats
            .rtt_ms
            .store(rtt.as_millis() as u64, Ordering::Relaxed);
    }
    let loss = match (ps.egress_loss_fraction, ps.ingress_loss_fraction) {
        (Some(e), Some(i)) => Some(e.max(i)),
        (e, i) => e.or(i),
    };
    if let Some(l) = loss {
        let ppm = (l.clamp(0.0, 1.0) as f64 * 1e6) as u64;
        stats.loss_ppm.store(ppm, Ordering::Relaxed);
    }
    let (t, tx, rx) = (ps.timestamp, ps.peer_bytes_tx, ps.peer_bytes_rx);
    // The session's counts start at zero: its first stats carry all it has moved so far.
    let (tx0, rx0) = last.map_or((0, 0), |(_, tx0, rx0)| (tx0, rx0));
    stats
        .sent_wire_bytes
        .fetch_add(tx.saturating_sub(tx0), Ordering::Relaxed);
    stats
        .received_wire_bytes
        .fetch_add(rx.saturating_sub(rx0), Ordering::Relaxed);
    if let Some((t0, tx0, rx0)) = *last {
        let secs = t.saturating_duration_since(t0).as_secs_f64();
        if secs > 0.1 {
            let rate = |now: u64, then: u64| (now.saturating_sub(then) as f64 * 8.0 / secs) as u64;
            stats.sent_bps.store(rate(tx, tx0), Ordering::Relaxed);
            stats.received_bps.store(rate(rx, rx0), Ordering::Relaxed);
        }
    }
    *last = Some((t, tx, rx));
}

/// Keeps one WHIP or WHEP session up until `stop`: creates it, runs it, and after any loss
/// (network, SFU restart) creates a new one with backoff. A refused token is renewed from the
/// token URL, if there is one. Returns an error only for failures retrying cannot fix (a bad
/// token, a forbidden role). `via` sends the media through a
/// relay instead of to the SFU's own candidates.
pub fn supervise(
    client: &WhipClient,
    endpoint: Endpoint,
    room: &str,
    stop: &AtomicBool,
    stats: &SessionStats,
    via: Option<SocketAddr>,
    mut prepare: impl FnMut(&PeerSocket, Instant) -> Result<Prepared, String>,
) -> Result<(), WhipError> {
    let what = endpoint.as_str();
    let host = client.sfu().host_str().unwrap_or("127.0.0.1").to_string();
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(2),
        std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64,
    );
    let fail = |e: String| {
        tracing::warn!("{what}: {e}");
        stats.failures.fetch_add(1, Ordering::Relaxed);
        stats.set_error(e);
    };
    // Whether the token in use was fetched after the SFU refused the one before.
    let mut renewed = false;
    while !stop.load(Ordering::Relaxed) {
        let attempt = (|| {
            let socket = PeerSocket::towards(&host).map_err(|e| format!("socket: {e}"))?;
            let p = prepare(&socket, Instant::now())?;
            Ok::<_, String>((socket, p))
        })();
        let (mut socket, mut p) = match attempt {
            Ok(x) => x,
            Err(e) => {
                fail(e);
                sleep_unless_stopped(backoff.next_delay(), stop);
                continue;
            }
        };
        let created = match client.create(endpoint, room, &p.offer.to_sdp_string()) {
            Ok(c) => {
                renewed = false;
                c
            }
            // An expired token: a new one from the token URL, once; refused again, it is not
            // the token's age.
            Err(e) if e.is_unauthorized() && !renewed => match client.renew_token(stop) {
                Ok(true) => {
                    tracing::info!("{what}: the SFU refused the token ({e}); fetched a new one");
                    renewed = true;
                    continue;
                }
                Ok(false) => {
                    stats.set_error(&e);
                    return Err(e);
                }
                Err(FetchError::Stopped) => break,
                Err(f) => {
                    stats.set_error(format!("{e}; and no new token: {f}"));
                    return Err(e);
                }
            },
            Err(e) if e.is_permanent() => {
                stats.set_error(&e);
                return Err(e);
            }
            Err(e) => {
                fail(e.to_string());
                sleep_unless_stopped(backoff.next_delay(), stop);
                continue;
            }
        };
        tracing::info!("{what}: session {} created", created.location);
        let answer = match via {
            Some(v) => redirect_candidates(&created.answer, v),
            None => created.answer.clone(),
        };
        let accepted = SdpAnswer::from_sdp_string(&answer)
            .map_err(|e| e.to_string())
            .and_then(|a| {
                p.rtc
                    .sdp_api()
                    .accept_answer(p.pending, a)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = accepted {
            fail(format!("unusable SDP answer: {e}"));
            let _ = client.delete(&created.location);
            sleep_unless_stopped(backoff.next_delay(), stop);
            continue;
        }
        let began = Instant::now();
        let mut end = socket.run(&mut p.rtc, p.handler.as_mut(), stop, stats, false);
        // A lost connection: first ICE restarts of the same session (the SFU keeps its place
        // in the lesson) for up to RESTART_WINDOW, then a new session.
        let mut lost_at: Option<Instant> = None;
        loop {
            let why = match &end {
                PeerEnd::Lost(why) => {
                    lost_at = Some(Instant::now());
                    why.clone()
                }
                PeerEnd::Failed(why) if lost_at.is_some_and(|t| t.elapsed() < RESTART_WINDOW) => {
                    why.clone()
                }
                _ => break,
            };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            tracing::info!("{what}: {why}; restarting ICE");
            stats.set_error(format!("{why}; restarting ICE"));
            match restart_ice(
                client,
                &created.location,
                &answer,
                &mut p.rtc,
                stop,
                &mut backoff,
            ) {
                Ok(()) => end = socket.run(&mut p.rtc, p.handler.as_mut(), stop, stats, true),
                Err(e) => {
                    tracing::info!("{what}: ICE restart failed ({e}); creating a new session");
                    break;
                }
            }
        }
        // Best effort: after an SFU restart the session is gone anyway (404 counts as done).
        if let Err(e) = client.delete(&created.location) {
            tracing::debug!("{what}: DELETE {}: {e}", created.location);
        }
        match end {
            PeerEnd::Stopped => break,
            PeerEnd::Lost(e) | PeerEnd::Failed(e) => {
                if began.elapsed() > STABLE {
                    backoff.reset();
                }
                fail(format!("session ended: {e}"));
                sleep_unless_stopped(backoff.next_delay(), stop);
            }
        }
    }
    Ok(())
}
