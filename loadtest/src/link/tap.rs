//! Measuring what crosses an emulated link, from outside it: every datagram the sender hands
//! to the link, and when (if ever) it comes out. The [`super::relay`] shapes the link but
//! reports only counters, so `link-meter` (the RFC 8867 benchmark of
//! `classroom-agent/bench/rfc8867.sh`) wraps it in a [`Tap`] on each side and reads rate,
//! one-way delay and loss per time window from a [`Meter`].
//!
//! ```text
//! sender ─▶ Tap entry ─▶ link-relay ─▶ Tap exit ─▶ target (the SFU's media port)
//!        ◀─            ◀─           ◀─          ◀─
//! ```
//!
//! The [`Meter`] is pure (time comes from the caller); the [`Tap`] owns the sockets.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::UDP_IPV4_OVERHEAD;
use crate::measure::SendLog;

/// A datagram not out of the link this long after it went in is lost.
pub const LOSS_AFTER: Duration = Duration::from_secs(3);

/// One window of what went into the link and how it came out.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Window {
    /// Start of the window, from the meter's origin.
    pub at_ms: u64,
    /// Bytes handed to the link, IP and UDP headers included.
    pub sent_bytes: u64,
    pub sent_packets: u64,
    /// Of those sent in this window: delivered, and lost.
    pub delivered_packets: u64,
    pub lost_packets: u64,
    /// One-way delay of the packets sent in this window that came out, ms.
    pub delay_ms: Vec<f64>,
}

impl Window {
    /// Rate into the link, bit/s.
    pub fn sent_bps(&self, len: Duration) -> f64 {
        self.sent_bytes as f64 * 8.0 / len.as_secs_f64()
    }

    pub fn max_delay_ms(&self) -> Option<f64> {
        self.delay_ms.iter().copied().reduce(f64::max)
    }
}

/// Datagrams in flight and finished windows.
#[derive(Debug)]
pub struct Meter {
    origin: Instant,
    window: Duration,
    /// Fingerprint → (sent at, window index).
    in_flight: HashMap<u64, (Instant, usize)>,
    windows: Vec<Window>,
}

/// A datagram's key while in flight: its length and first bytes, where SRTP has its sequence
/// number, STUN its transaction id and DTLS its record number, so collisions in a few seconds
/// of flight are vanishingly rare.
pub fn fingerprint(data: &[u8]) -> u64 {
    SendLog::fingerprint(data)
}

impl Meter {
    pub fn new(origin: Instant, window: Duration) -> Meter {
        Meter {
            origin,
            window,
            in_flight: HashMap::new(),
            windows: vec![],
        }
    }

    pub fn window_len(&self) -> Duration {
        self.window
    }

    fn index(&mut self, now: Instant) -> usize {
        let i = (now.saturating_duration_since(self.origin).as_nanos() / self.window.as_nanos())
            as usize;
        while self.windows.len() <= i {
            let at = self.window * self.windows.len() as u32;
            self.windows.push(Window {
                at_ms: at.as_millis() as u64,
                ..Window::default()
            });
        }
        i
    }

    /// A datagram of `len` bytes went into the link.
    pub fn sent(&mut self, now: Instant, key: u64, len: usize) {
        let i = self.index(now);
        let w = &mut self.windows[i];
        w.sent_packets += 1;
        // IPv4 and UDP headers count against the link's rate, as in the relay.
        w.sent_bytes += (len + UDP_IPV4_OVERHEAD) as u64;
        self.in_flight.insert(key, (now, i));
        self.expire(now);
    }

    /// A datagram came out of the link. Unknown ones (duplicates, late after being counted
    /// lost) are ignored.
    pub fn arrived(&mut self, now: Instant, key: u64) {
        self.index(now);
        if let Some((at, i)) = self.in_flight.remove(&key) {
            let w = &mut self.windows[i];
            w.delivered_packets += 1;
            w.delay_ms
                .push(now.saturating_duration_since(at).as_secs_f64() * 1000.0);
        }
    }

    fn expire(&mut self, now: Instant) {
        // Cheap enough: only scanned when the map has grown past a few seconds' worth.
        if self.in_flight.len() >= 4096 {
            self.count_lost(now);
        }
    }

    /// Datagrams in flight longer than [`LOSS_AFTER`] at `now` are lost, in the window they
    /// were sent in.
    fn count_lost(&mut self, now: Instant) {
        let windows = &mut self.windows;
        self.in_flight.retain(|_, (at, i)| {
            let alive = now.saturating_duration_since(*at) < LOSS_AFTER;
            if !alive {
                windows[*i].lost_packets += 1;
            }
            alive
        });
    }

    /// The windows so far; datagrams older than [`LOSS_AFTER`] at `now` count as lost.
    pub fn windows(&mut self, now: Instant) -> Vec<Window> {
        self.index(now);
        self.count_lost(now);
        self.windows.clone()
    }
}

/// Percentile (0–100) of a set of samples, nearest rank; `None` when empty.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// The sockets of a two-sided tap around a link. The exit side exists first (the relay
/// needs its address as its target), then the entry side (it needs the relay's address).
/// Like `link-relay`, each side gives every source address its own upstream socket, so a
/// sender with several local candidates (Chromium) keeps its ICE pairs apart.
pub struct Tap {
    meter: Arc<Mutex<Meter>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    exit_addr: SocketAddr,
    entry_addr: Option<SocketAddr>,
}

const POLL: Duration = Duration::from_millis(100);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// What one side does with a datagram passing it, in either direction.
type Seen = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Relays between sources arriving on `listen` and `upstream`: each source gets its own
/// socket connected to `upstream`, whose replies go back to that source. `forward` sees each
/// datagram going upstream.
fn side(
    listen: Arc<UdpSocket>,
    upstream: SocketAddr,
    forward: Seen,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let _ = listen.set_read_timeout(Some(POLL));
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, src)) = listen.recv_from(&mut buf) else {
                continue;
            };
            let up = match peers.get(&src) {
                Some(u) => u.clone(),
                None => {
                    let Ok(u) = UdpSocket::bind(loopback()).and_then(|u| {
                        u.connect(upstream)?;
                        u.set_read_timeout(Some(POLL))?;
                        Ok(Arc::new(u))
                    }) else {
                        continue;
                    };
                    let (back, reply, stop) = (listen.clone(), u.clone(), stop.clone());
                    threads.lock().unwrap().push(std::thread::spawn(move || {
                        let mut buf = vec![0u8; 65_536];
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok(n) = reply.recv(&mut buf) {
                                let _ = back.send_to(&buf[..n], src);
                            }
                        }
                    }));
                    peers.insert(src, u.clone());
                    u
                }
            };
            forward(&buf[..n]);
            let _ = up.send(&buf[..n]);
        }
    })
}

impl Tap {
    /// Binds the exit side on loopback: datagrams the link delivers here are timed and passed
    /// on to `target`; the target's replies go back to the link.
    pub fn exit(target: SocketAddr, origin: Instant, window: Duration) -> std::io::Result<Tap> {
        let meter = Arc::new(Mutex::new(Meter::new(origin, window)));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let from_link = Arc::new(UdpSocket::bind(loopback())?);
        let exit_addr = from_link.local_addr()?;
        let m = meter.clone();
        let arrived: Seen = Arc::new(move |d: &[u8]| {
            m.lock().unwrap().arrived(Instant::now(), fingerprint(d));
        });
        let t = side(from_link, target, arrived, stop.clone(), threads.clone());
        threads.lock().unwrap().push(t);
        Ok(Tap {
            meter,
            stop,
            threads,
            exit_addr,
            entry_addr: None,
        })
    }

    /// Where the link should deliver (the relay's `--target`).
    pub fn exit_addr(&self) -> SocketAddr {
        self.exit_addr
    }

    /// Binds the entry side: the sender sends to the returned address; datagrams are timed
    /// and passed on to the link at `link`, and the link's replies go back to the sender.
    pub fn open_entry(&mut self, link: SocketAddr) -> std::io::Result<SocketAddr> {
        let from_sender = Arc::new(UdpSocket::bind(loopback())?);
        let addr = from_sender.local_addr()?;
        let m = self.meter.clone();
        let sent: Seen = Arc::new(move |d: &[u8]| {
            m.lock()
                .unwrap()
                .sent(Instant::now(), fingerprint(d), d.len());
        });
        let t = side(
            from_sender,
            link,
            sent,
            self.stop.clone(),
            self.threads.clone(),
        );
        self.threads.lock().unwrap().push(t);
        self.entry_addr = Some(addr);
        Ok(addr)
    }

    pub fn entry_addr(&self) -> Option<SocketAddr> {
        self.entry_addr
    }

    pub fn windows(&self) -> Vec<Window> {
        self.meter.lock().unwrap().windows(Instant::now())
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A side may add a reply thread while we join: take the list until it stays empty.
        loop {
            let batch: Vec<JoinHandle<()>> = self.threads.lock().unwrap().drain(..).collect();
            if batch.is_empty() {
                break;
            }
            for t in batch {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(500);

    #[test]
    fn rate_delay_and_loss_per_window() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0, W);
        // 100 datagrams of 972 bytes (1000 on the wire) in the first second, 10 ms apart,
        // each out 50 ms later except every tenth.
        for i in 0..100u64 {
            let at = t0 + Duration::from_millis(10 * i);
            m.sent(at, i, 972);
            if i % 10 != 0 {
                m.arrived(at + Duration::from_millis(50), i);
            }
        }
        let w = m.windows(t0 + Duration::from_secs(5));
        assert_eq!(w[0].sent_packets, 50);
        assert_eq!(w[0].sent_bytes, 50_000);
        assert_eq!(w[0].sent_bps(W), 800_000.0);
        assert_eq!((w[0].delivered_packets, w[0].lost_packets), (45, 5));
        assert!(w[0].delay_ms.iter().all(|d| (d - 50.0).abs() < 1e-6));
        assert_eq!(w[1].sent_packets, 50);
        assert_eq!(w.len(), 11, "windows up to the last look");
        assert_eq!(w[1].at_ms, 500);
    }

    #[test]
    fn in_flight_is_not_lost_yet_and_duplicates_are_ignored() {
        let t0 = Instant::now();
        let mut m = Meter::new(t0, W);
        m.sent(t0, 1, 100);
        let w = m.windows(t0 + Duration::from_secs(1));
        assert_eq!((w[0].delivered_packets, w[0].lost_packets), (0, 0));
        m.arrived(t0 + Duration::from_millis(1200), 1);
        m.arrived(t0 + Duration::from_millis(1300), 1);
        let w = m.windows(t0 + Duration::from_secs(10));
        assert_eq!((w[0].delivered_packets, w[0].lost_packets), (1, 0));
        assert_eq!(w[0].max_delay_ms(), Some(1200.0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&[], 95.0), None);
        assert_eq!(percentile(&[3.0], 0.0), Some(3.0));
    }

    #[test]
    fn fingerprints_tell_datagrams_apart() {
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
    }

    /// Loopback through both sides of a tap with nothing between them.
    #[test]
    fn tap_times_datagrams_both_ways() {
        let target = UdpSocket::bind(loopback()).unwrap();
        target
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut tap = Tap::exit(target.local_addr().unwrap(), Instant::now(), W).unwrap();
        let entry = tap.open_entry(tap.exit_addr()).unwrap();
        let client = UdpSocket::bind(loopback()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            client.send_to(&[i; 20], entry).unwrap();
            let (n, from) = target.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 20]);
            target.send_to(b"reply", from).unwrap();
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"reply");
        }
        // A second sender gets its own path: the target sees another source.
        let other = UdpSocket::bind(loopback()).unwrap();
        other.send_to(b"other", entry).unwrap();
        let (_, from2) = target.recv_from(&mut buf).unwrap();
        target.send_to(b"back", from2).unwrap();
        client.send_to(b"again", entry).unwrap();
        let (_, from1) = target.recv_from(&mut buf).unwrap();
        assert_ne!(from1, from2);
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (n, _) = other.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
        let w = tap.windows();
        let sent: u64 = w.iter().map(|w| w.sent_packets).sum();
        let delivered: u64 = w.iter().map(|w| w.delivered_packets).sum();
        assert_eq!((sent, delivered), (7, 7));
        assert_eq!(
            w.iter().map(|w| w.sent_bytes).sum::<u64>(),
            5 * (20 + UDP_IPV4_OVERHEAD as u64) + 2 * (5 + UDP_IPV4_OVERHEAD as u64)
        );
    }
}
