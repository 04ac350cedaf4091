//! The relay link between two nodes: one QUIC connection (quinn) with mutual TLS from PEM
//! files, a Hello that proves the cluster secret, one bidirectional stream of control frames,
//! and RTP as unreliable QUIC datagrams (never retransmitted by QUIC: latency first; repair
//! goes through `Control::Nack`).
//!
//! One [`RelayEndpoint`] per node binds the relay port, accepts edges and connects to origins.
//! A [`RelayConn`] is handed out only after TLS and the Hello/Welcome exchange succeeded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, Mutex};

use super::wire::{self, Control, FrameReader, RelayPacket, WireError};

/// The name every node certificate carries (see `certs`): nodes are dialled by IP address,
/// and the CA, not the name, says who belongs to the cluster.
pub const SERVER_NAME: &str = "classroom-sfu";
/// ALPN of the relay protocol; bumped with incompatible changes of `wire`.
pub const ALPN: &[u8] = b"classroom-relay/1";

/// Application close codes a peer may see.
pub const CLOSE_NORMAL: u32 = 0;
/// The Hello's proof did not match the cluster secret.
pub const CLOSE_BAD_PROOF: u32 = 1;
/// The control stream broke the protocol (bad frame, oversized frame, no Hello first).
pub const CLOSE_PROTOCOL: u32 = 2;
/// No Hello arrived in time.
pub const CLOSE_HELLO_TIMEOUT: u32 = 3;

const EKM_LABEL: &[u8] = b"EXPORTER-classroom-relay-hello";

/// PEM files of this node's TLS identity and of the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayTls {
    /// This node's certificate chain (leaf first), signed by `ca`.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs every node's certificate: peers are trusted if and only if it signed theirs.
    pub ca: PathBuf,
}

/// Who this node is on relays, and the secret every node of the cluster shares.
#[derive(Clone)]
pub struct NodeIdentity {
    pub id: String,
    pub region: String,
    pub secret: String,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("id", &self.id)
            .field("region", &self.region)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// How fast a silent peer is given up on, and how long a Hello may take.
#[derive(Debug, Clone, Copy)]
pub struct RelayTiming {
    /// A keep-alive is sent after this much silence, so an idle link stays up and a dead one
    /// is noticed.
    pub keep_alive: Duration,
    /// With nothing heard for this long the connection is dead (also bounds the TLS handshake).
    pub idle_timeout: Duration,
    /// From the end of TLS to the Hello (accepting side) or to the Welcome (connecting side).
    pub hello_timeout: Duration,
    /// Outgoing datagram buffer; when it is full the oldest queued datagrams are dropped,
    /// since late media is useless media.
    pub datagram_send_buffer: usize,
    /// UDP payload size used from the start, before MTU discovery: at QUIC's floor of 1,200 a
    /// browser's full-size RTP payload (up to about 1,200 bytes) would not fit a datagram with
    /// our header. Paths between servers carry 1,500-byte packets; if one does not, black hole
    /// detection falls back to 1,200 and oversized packets are refused (`DatagramTooBig`).
    pub initial_mtu: u16,
}

impl Default for RelayTiming {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
            hello_timeout: Duration::from_secs(3),
            datagram_send_buffer: 256 * 1024,
            initial_mtu: 1400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("relay TLS file {path}: {reason}")]
    TlsFile { path: PathBuf, reason: String },
    #[error("relay TLS configuration: {0}")]
    Tls(String),
    #[error("cannot bind the relay port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to relay {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("relay peer closed the connection (code {code}): {reason}")]
    PeerClosed { code: u64, reason: String },
    #[error("relay connection closed here")]
    LocallyClosed,
    #[error("relay peer silent for too long")]
    TimedOut,
    #[error("relay connection lost: {0}")]
    Lost(String),
    #[error("no Hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("refused Hello from {node}: {reason}")]
    BadHello { node: String, reason: String },
    #[error("relay protocol: {0}")]
    Wire(#[from] WireError),
    #[error("the peer ended the control stream")]
    ControlEnded,
    #[error("datagram of {size} bytes exceeds the path's {max}")]
    DatagramTooBig { size: usize, max: usize },
    #[error("the peer does not accept datagrams")]
    DatagramsUnsupported,
}

impl From<quinn::ConnectionError> for LinkError {
    fn from(e: quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        match e {
            E::ApplicationClosed(c) => LinkError::PeerClosed {
                code: c.error_code.into_inner(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            E::LocallyClosed => LinkError::LocallyClosed,
            E::TimedOut => LinkError::TimedOut,
            other => LinkError::Lost(other.to_string()),
        }
    }
}

impl From<quinn::ReadError> for LinkError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::ConnectionLost(c) => c.into(),
            other => LinkError::Lost(other.to_string()),
        }
    }
}

impl From<quinn::WriteError> for LinkError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => c.into(),
            other => LinkError::Lost(other.to_string()),
        }
    }
}

fn tls_file_error(path: &Path, e: impl std::fmt::Display) -> LinkError {
    LinkError::TlsFile {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, LinkError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| tls_file_error(path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_file_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_file_error(path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl RelayTls {
    /// Reads and checks the three files; each error names the file and what is wrong with it.
    pub fn load(&self) -> Result<LoadedTls, LinkError> {
        let chain = load_certs(&self.cert)?;
        let key =
            PrivateKeyDer::from_pem_file(&self.key).map_err(|e| tls_file_error(&self.key, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs(&self.ca)? {
            roots.add(ca).map_err(|e| {
                tls_file_error(&self.ca, format!("not a usable CA certificate: {e}"))
            })?;
        }
        Ok(LoadedTls {
            chain,
            key,
            roots: Arc::new(roots),
        })
    }
}

/// The parsed contents of a [`RelayTls`].
#[derive(Debug)]
pub struct LoadedTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<rustls::RootCertStore>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring, as webrtc-rs (dtls) uses: with one provider compiled in, rustls can pick the
    // process default for the libraries that rely on it.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport(timing: &RelayTiming) -> Result<Arc<quinn::TransportConfig>, LinkError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(timing.keep_alive));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(timing.idle_timeout)
            .map_err(|e| LinkError::Tls(e.to_string()))?,
    ));
    t.datagram_send_buffer_size(timing.datagram_send_buffer);
    t.initial_mtu(timing.initial_mtu.max(1200));
    t.datagram_receive_buffer_size(Some(1 << 20));
    // Only the control stream is opened, by the connecting side.
    t.max_concurrent_uni_streams(0u32.into());
    t.max_concurrent_bidi_streams(1u32.into());
    Ok(Arc::new(t))
}

/// Server side: requires a client certificate signed by the CA.
pub fn quic_server_config(
    tls: &LoadedTls,
    timing: &RelayTiming,
) -> Result<quinn::ServerConfig, LinkError> {
    let tls_err = |e: rustls::Error| LinkError::Tls(e.to_string());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(tls.roots.clone(), provider())
            .build()
            .map_err(|e| LinkError::Tls(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| LinkError::Tls(format!("this node's certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(cfg).map_err(|e| LinkError::Tls(e.to_string()))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(transport(timing)?);
    Ok(sc)
}

/// Client side: verifies the server against the CA under [`SERVER_NAME`], presents this node's
/// certificate. Public so tests can build hostile clients.
pub fn quic_client_config(
    tls: &LoadedTls,
    timing: &RelayTiming,
) -> Result<quinn::ClientConfig, LinkError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .with_root_certificates(tls.roots.clone())
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| LinkError::Tls(format!("this node's certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(cfg).map_err(|e| LinkError::Tls(e.to_string()))?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(transport(timing)?);
    Ok(cc)
}

/// What the Hello proof covers: keying material exported from this very TLS session (so the
/// proof is worthless on any other connection) and who says hello.
fn hello_material(
    conn: &quinn::Connection,
    node: &str,
    region: &str,
) -> Result<Vec<u8>, LinkError> {
    let mut ekm = [0u8; 32];
    conn.export_keying_material(&mut ekm, EKM_LABEL, b"")
        .map_err(|_| LinkError::Tls("cannot export keying material".into()))?;
    let mut m = ekm.to_vec();
    for part in [node, region] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part.as_bytes());
    }
    Ok(m)
}

/// The `Hello` a node sends on `conn`. Public so tests can speak the protocol by hand.
pub fn hello(conn: &quinn::Connection, node: &NodeIdentity) -> Result<Control, LinkError> {
    let material = hello_material(conn, &node.id, &node.region)?;
    Ok(Control::Hello {
        node: node.id.clone(),
        region: node.region.clone(),
        proof: wire::proof(&node.secret, &material),
    })
}

/// One QUIC endpoint on the relay port: accepts connections from other nodes and connects to them.
pub struct RelayEndpoint {
    endpoint: quinn::Endpoint,
    node: Arc<NodeIdentity>,
    timing: RelayTiming,
    incoming: Mutex<mpsc::Receiver<Result<RelayConn, LinkError>>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl RelayEndpoint {
    /// Binds with the default timing. Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr, tls: &RelayTls, node: NodeIdentity) -> Result<Self, LinkError> {
        Self::bind_with(addr, tls, node, RelayTiming::default())
    }

    pub fn bind_with(
        addr: SocketAddr,
        tls: &RelayTls,
        node: NodeIdentity,
        timing: RelayTiming,
    ) -> Result<Self, LinkError> {
        let loaded = tls.load()?;
        let mut endpoint = quinn::Endpoint::server(quic_server_config(&loaded, &timing)?, addr)
            .map_err(|source| LinkError::Bind { addr, source })?;
        endpoint.set_default_client_config(quic_client_config(&loaded, &timing)?);
        let node = Arc::new(node);
        let (tx, rx) = mpsc::channel(64);
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), node.clone(), timing, tx));
        Ok(Self {
            endpoint,
            node,
            timing,
            incoming: Mutex::new(rx),
            accept_task,
        })
    }

    /// The next connection from another node that passed TLS and the Hello check. A failed
    /// handshake is an `Err` (log it and call again); `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Result<RelayConn, LinkError>> {
        self.incoming.lock().await.recv().await
    }

    /// Connects to another node's relay port, says Hello and waits for its Welcome.
    pub async fn connect(&self, addr: SocketAddr) -> Result<RelayConn, LinkError> {
        let connect_err = |reason: String| LinkError::Connect { addr, reason };
        let conn = self
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?
            .await?;
        match tokio::time::timeout(self.timing.hello_timeout, self.say_hello(&conn)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                conn.close(CLOSE_PROTOCOL.into(), b"hello failed");
                Err(e)
            }
            Err(_) => {
                conn.close(CLOSE_HELLO_TIMEOUT.into(), b"no welcome");
                Err(LinkError::HelloTimeout(self.timing.hello_timeout))
            }
        }
    }

    async fn say_hello(&self, conn: &quinn::Connection) -> Result<RelayConn, LinkError> {
        let (mut send, recv) = conn.open_bi().await?;
        send.write_all(&wire::encode_frame(&hello(conn, &self.node)?)?)
            .await?;
        let mut reader = FrameReader::new();
        let mut recv = recv;
        // A refusal arrives as a connection close: report the peer's reason, not a stream error.
        let first = match read_frame(&mut recv, &mut reader).await {
            Ok(c) => c,
            Err(e) => return Err(conn.close_reason().map(LinkError::from).unwrap_or(e)),
        };
        match first {
            Control::Welcome { node, region } => Ok(RelayConn::new(
                conn.clone(),
                node,
                region,
                send,
                recv,
                reader,
            )),
            other => Err(LinkError::BadHello {
                node: String::new(),
                reason: format!("expected a Welcome, got {other:?}"),
            }),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        // The socket is bound for the endpoint's whole life; only a closed socket has no address.
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Closes every relay connection of this node and stops accepting.
    pub fn close(&self) {
        self.endpoint
            .close(CLOSE_NORMAL.into(), b"node shutting down");
        self.accept_task.abort();
    }

    /// Waits until every connection has told its peer it is closed (bounded by the idle timeout).
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

impl Drop for RelayEndpoint {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    node: Arc<NodeIdentity>,
    timing: RelayTiming,
    tx: mpsc::Sender<Result<RelayConn, LinkError>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let node = node.clone();
        let tx = tx.clone();
        // Each handshake on its own task, so a slow or silent peer delays nobody else.
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let result = welcome(incoming, &node, timing).await;
            if let Err(e) = &result {
                tracing::warn!(%remote, error = %e, "relay handshake refused");
            }
            let _ = tx.send(result).await;
        });
    }
}

async fn welcome(
    incoming: quinn::Incoming,
    node: &NodeIdentity,
    timing: RelayTiming,
) -> Result<RelayConn, LinkError> {
    let conn = incoming.accept().map_err(LinkError::from)?.await?;
    let hello = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let mut reader = FrameReader::new();
        let first = read_frame(&mut recv, &mut reader).await?;
        Ok::<_, LinkError>((send, recv, reader, first))
    };
    let (mut send, recv, reader, first) =
        match tokio::time::timeout(timing.hello_timeout, hello).await {
            Err(_) => {
                conn.close(CLOSE_HELLO_TIMEOUT.into(), b"no hello in time");
                return Err(LinkError::HelloTimeout(timing.hello_timeout));
            }
            Ok(Err(e)) => {
                conn.close(CLOSE_PROTOCOL.into(), b"bad control stream");
                return Err(e);
            }
            Ok(Ok(x)) => x,
        };
    let Control::Hello {
        node: peer,
        region,
        proof,
    } = first
    else {
        conn.close(CLOSE_PROTOCOL.into(), b"the first message must be a hello");
        return Err(LinkError::BadHello {
            node: String::new(),
            reason: format!("first message was not a Hello: {first:?}"),
        });
    };
    let material = hello_material(&conn, &peer, &region)?;
    if !wire::verify_proof(&node.secret, &material, &proof) {
        conn.close(CLOSE_BAD_PROOF.into(), b"wrong cluster secret");
        return Err(LinkError::BadHello {
            node: peer,
            reason: "wrong cluster secret".into(),
        });
    }
    let welcome = Control::Welcome {
        node: node.id.clone(),
        region: node.region.clone(),
    };
    send.write_all(&wire::encode_frame(&welcome)?).await?;
    tracing::info!(peer = %peer, %region, remote = %conn.remote_address(), "relay peer welcomed");
    Ok(RelayConn::new(conn, peer, region, send, recv, reader))
}

/// Reads until one whole frame is there. Cancel-safe: bytes read are kept in `reader`.
async fn read_frame(
    recv: &mut quinn::RecvStream,
    reader: &mut FrameReader,
) -> Result<Control, LinkError> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(c) = reader.pop()? {
            return Ok(c);
        }
        match recv.read(&mut buf).await? {
            Some(n) => reader.push(&buf[..n]),
            None => return Err(LinkError::ControlEnded),
        }
    }
}

#[derive(Default)]
struct Counters {
    sent_datagrams: AtomicU64,
    sent_bytes: AtomicU64,
    received_datagrams: AtomicU64,
    received_bytes: AtomicU64,
    dropped_datagrams: AtomicU64,
    malformed_datagrams: AtomicU64,
}

struct Inner {
    conn: quinn::Connection,
    peer: String,
    peer_region: String,
    send: Mutex<quinn::SendStream>,
    recv: Mutex<(quinn::RecvStream, FrameReader)>,
    counters: Counters,
}

/// A relay connection to another node, after TLS and Hello/Welcome. Cheap to clone: one task
/// may read control, another datagrams, and any number send.
#[derive(Clone)]
pub struct RelayConn(Arc<Inner>);

/// Counters of one relay connection. Datagram counts are this link's RTP; `lost_packets` and
/// `rtt` are QUIC's view of the path (QUIC packets, which carry datagrams, control and acks).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    pub rtt: Duration,
    pub sent_datagrams: u64,
    pub sent_bytes: u64,
    pub received_datagrams: u64,
    pub received_bytes: u64,
    /// Not sent: too big for the path, or the send buffer was full (congestion).
    pub dropped_datagrams: u64,
    /// Received but not a valid `RelayPacket`: counted and skipped.
    pub malformed_datagrams: u64,
    pub lost_packets: u64,
    pub lost_bytes: u64,
    pub congestion_events: u64,
    pub cwnd: u64,
    pub mtu: u16,
}

impl RelayConn {
    fn new(
        conn: quinn::Connection,
        peer: String,
        peer_region: String,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        reader: FrameReader,
    ) -> Self {
        RelayConn(Arc::new(Inner {
            conn,
            peer,
            peer_region,
            send: Mutex::new(send),
            recv: Mutex::new((recv, reader)),
            counters: Counters::default(),
        }))
    }

    /// The peer's node id, from its Hello (or Welcome).
    pub fn peer(&self) -> &str {
        &self.0.peer
    }

    pub fn peer_region(&self) -> &str {
        &self.0.peer_region
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.0.conn.remote_address()
    }

    /// Sends one control message, reliably and in order. Do not cancel it halfway (a frame
    /// cut short would break the stream's framing).
    pub async fn send_control(&self, c: &Control) -> Result<(), LinkError> {
        let frame = wire::encode_frame(c)?;
        self.0.send.lock().await.write_all(&frame).await?;
        Ok(())
    }

    /// The next control message. Cancel-safe. A malformed or oversized frame closes the
    /// connection (the peer is broken) and is returned as an error; so is a lost connection.
    pub async fn recv_control(&self) -> Result<Control, LinkError> {
        let mut guard = self.0.recv.lock().await;
        let (recv, reader) = &mut *guard;
        match read_frame(recv, reader).await {
            Ok(c) => Ok(c),
            Err(LinkError::Wire(e)) => {
                self.0
                    .conn
                    .close(CLOSE_PROTOCOL.into(), b"bad control frame");
                Err(LinkError::Wire(e))
            }
            Err(e) => Err(self.0.conn.close_reason().map(LinkError::from).unwrap_or(e)),
        }
    }

    /// Queues one packet as a datagram, without waiting. Returns `Ok` also when congestion
    /// drops a queued datagram (counted in `dropped_datagrams`; repair is the NACK's job);
    /// `DatagramTooBig` (counted too) and connection errors are `Err`.
    pub fn send_packet(&self, p: &RelayPacket) -> Result<(), LinkError> {
        let c = &self.0.counters;
        let bytes = p.encode();
        let size = bytes.len();
        let max = self
            .0
            .conn
            .max_datagram_size()
            .ok_or(LinkError::DatagramsUnsupported)?;
        if size > max {
            c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
            return Err(LinkError::DatagramTooBig { size, max });
        }
        if self.0.conn.datagram_send_buffer_space() < size {
            // quinn makes room by dropping the oldest queued datagrams.
            c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
        }
        match self.0.conn.send_datagram(bytes) {
            Ok(()) => {
                c.sent_datagrams.fetch_add(1, Ordering::Relaxed);
                c.sent_bytes.fetch_add(size as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(quinn::SendDatagramError::ConnectionLost(e)) => Err(e.into()),
            Err(quinn::SendDatagramError::TooLarge) => {
                c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                Err(LinkError::DatagramTooBig { size, max })
            }
            Err(_) => Err(LinkError::DatagramsUnsupported),
        }
    }

    /// Largest `RelayPacket` payload the path takes now (None if the peer takes no datagrams).
    pub fn max_payload(&self) -> Option<usize> {
        self.0
            .conn
            .max_datagram_size()
            .map(|m| m.saturating_sub(wire::HEADER_LEN))
    }

    /// The next valid relayed packet; malformed datagrams are counted and skipped.
    /// Cancel-safe. Errors only when the connection is gone.
    pub async fn recv_packet(&self) -> Result<RelayPacket, LinkError> {
        let c = &self.0.counters;
        loop {
            let d = self.0.conn.read_datagram().await?;
            match RelayPacket::decode(&d) {
                Ok(p) => {
                    c.received_datagrams.fetch_add(1, Ordering::Relaxed);
                    c.received_bytes
                        .fetch_add(d.len() as u64, Ordering::Relaxed);
                    return Ok(p);
                }
                Err(e) => {
                    let n = c.malformed_datagrams.fetch_add(1, Ordering::Relaxed);
                    if n.is_power_of_two() || n == 0 {
                        tracing::warn!(peer = %self.0.peer, error = %e, count = n + 1, "malformed relay datagram");
                    }
                }
            }
        }
    }

    pub fn stats(&self) -> LinkStats {
        let c = &self.0.counters;
        let q = self.0.conn.stats();
        LinkStats {
            rtt: q.path.rtt,
            sent_datagrams: c.sent_datagrams.load(Ordering::Relaxed),
            sent_bytes: c.sent_bytes.load(Ordering::Relaxed),
            received_datagrams: c.received_datagrams.load(Ordering::Relaxed),
            received_bytes: c.received_bytes.load(Ordering::Relaxed),
            dropped_datagrams: c.dropped_datagrams.load(Ordering::Relaxed),
            malformed_datagrams: c.malformed_datagrams.load(Ordering::Relaxed),
            lost_packets: q.path.lost_packets,
            lost_bytes: q.path.lost_bytes,
            congestion_events: q.path.congestion_events,
            cwnd: q.path.cwnd,
            mtu: q.path.current_mtu,
        }
    }

    /// Closes the connection; the peer sees `PeerClosed` with `CLOSE_NORMAL` and this reason.
    pub fn close(&self, reason: &str) {
        self.0.conn.close(CLOSE_NORMAL.into(), reason.as_bytes());
    }

    /// Waits until the connection is gone, and says why.
    pub async fn closed(&self) -> LinkError {
        self.0.conn.closed().await.into()
    }

    /// The underlying QUIC connection, for what this wrapper does not expose.
    pub fn quic(&self) -> &quinn::Connection {
        &self.0.conn
    }
}

impl std::fmt::Debug for RelayConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConn")
            .field("peer", &self.0.peer)
            .field("region", &self.0.peer_region)
            .field("remote", &self.remote_addr())
            .finish()
    }
}
