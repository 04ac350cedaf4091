//! What travels between two nodes over a relay: RTP as QUIC datagrams, control messages
//! on one bidirectional stream. Pure encoding and decoding; the QUIC side is in `link`.

use serde::{Deserialize, Serialize};

/// One RTP packet of one relayed stream (a layer of a track), as the origin received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPacket {
    /// The stream id the origin gave this layer in `Control::Tracks` (per connection).
    pub stream: u32,
    /// Extended sequence number (no wrap) of the publisher's stream.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// The publisher's payload type (its codec is in the stream's `TrackInfo`).
    pub pt: u8,
    pub marker: bool,
    /// RFC 6464 audio level (-dBov, 0..=127 as negative) and voice flag, audio only.
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    /// Video orientation (CVO), video only.
    pub video_orientation: Option<u8>,
    /// When the origin received it from the publisher, microseconds since the Unix epoch:
    /// the edge measures the hop's added latency from it.
    pub received_us: u64,
    /// True when this is a retransmission answering a `Control::Nack`.
    pub repair: bool,
    pub payload: bytes::Bytes,
}

/// One layer of a published track, announced by the origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub stream: u32,
    /// `program::Track::as_str()`: teacher_audio, teacher_camera, courseware, class_audio, class_video.
    pub track: String,
    /// Who publishes it (the token's `sub`).
    pub owner: String,
    /// Layer index within the track (0 = lowest) and the layer count.
    pub layer: u8,
    pub layers: u8,
    pub rid: Option<String>,
    /// Codec of the publisher's payload type `pt`: name as in SDP (opus, VP8, H264, ...),
    /// clock rate, channels, fmtp line.
    pub pt: u8,
    pub codec: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub fmtp: String,
}

/// Control messages, both ways, on the connection's control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// First message of the connecting node: who it is, and proof it holds the cluster secret.
    Hello {
        node: String,
        region: String,
        proof: String,
    },
    /// The accepting node's answer to a valid Hello (`region` added by the link; empty from
    /// a node that does not send it).
    Welcome {
        node: String,
        #[serde(default)]
        region: String,
    },
    /// Edge → origin: send me this room's program.
    Subscribe {
        room: String,
    },
    Unsubscribe {
        room: String,
    },
    /// Origin → edge: the room's tracks now (sent on subscribe and whenever they change;
    /// an empty list means the teacher is gone).
    Tracks {
        room: String,
        tracks: Vec<TrackInfo>,
    },
    /// Edge → origin: the streams its classrooms need now (dynacast across the hop).
    Demand {
        room: String,
        streams: Vec<u32>,
    },
    /// Edge → origin: a keyframe is needed on this stream.
    Keyframe {
        room: String,
        stream: u32,
    },
    /// Edge → origin: these packets were lost on the hop; resend from the origin's cache.
    Nack {
        room: String,
        stream: u32,
        seqs: Vec<u64>,
    },
    /// Origin → edge: who is on stage and who is muted, so the edge fills its viewers' stage
    /// slots with the same classroom the teacher brought up (its feed is among the tracks).
    Stage {
        room: String,
        stage: Vec<String>,
        muted: Vec<String>,
    },
    /// Origin → edge: the room is not (or no longer) served here.
    Gone {
        room: String,
        reason: String,
    },
}

/// Why bytes from a peer could not be read as a relay packet or a control frame.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("datagram too short: {len} bytes, the header alone is {HEADER_LEN}")]
    Short { len: usize },
    #[error("unknown relay datagram version {0:#04x} (this node speaks {VERSION:#04x})")]
    Version(u8),
    #[error("unknown flag bits {0:#04x}")]
    Flags(u8),
    #[error("payload length says {said} bytes, the datagram carries {has}")]
    PayloadLength { said: usize, has: usize },
    #[error("control frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("bad control message: {0}")]
    Json(String),
}

/// First byte of every relay datagram: bumped whenever the header changes, so two nodes of
/// different builds refuse each other's datagrams instead of misreading them.
pub const VERSION: u8 = 0xC1;

/// version, flags, stream, seq, ts, pt, audio level, video orientation, received_us, payload length.
pub const HEADER_LEN: usize = 1 + 1 + 4 + 8 + 4 + 1 + 1 + 1 + 8 + 2;

const F_MARKER: u8 = 1 << 0;
const F_REPAIR: u8 = 1 << 1;
const F_AUDIO_LEVEL: u8 = 1 << 2;
const F_VOICE_KNOWN: u8 = 1 << 3;
const F_VOICE: u8 = 1 << 4;
const F_ORIENTATION: u8 = 1 << 5;
const F_ALL: u8 = F_MARKER | F_REPAIR | F_AUDIO_LEVEL | F_VOICE_KNOWN | F_VOICE | F_ORIENTATION;

impl RelayPacket {
    /// Bytes this packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// The datagram: a fixed big-endian header, then the RTP payload.
    ///
    /// The payload length field is 16 bits; a QUIC datagram is far smaller (about 1,200 bytes),
    /// so `link` refuses anything near that size before it gets here. A longer payload is cut
    /// to 65,535 bytes rather than written with a lying length.
    pub fn encode(&self) -> bytes::Bytes {
        use bytes::BufMut;
        let payload = &self.payload[..self.payload.len().min(u16::MAX as usize)];
        let mut flags = 0u8;
        if self.marker {
            flags |= F_MARKER;
        }
        if self.repair {
            flags |= F_REPAIR;
        }
        if self.audio_level.is_some() {
            flags |= F_AUDIO_LEVEL;
        }
        match self.voice_activity {
            Some(true) => flags |= F_VOICE_KNOWN | F_VOICE,
            Some(false) => flags |= F_VOICE_KNOWN,
            None => {}
        }
        if self.video_orientation.is_some() {
            flags |= F_ORIENTATION;
        }
        let mut b = bytes::BytesMut::with_capacity(HEADER_LEN + payload.len());
        b.put_u8(VERSION);
        b.put_u8(flags);
        b.put_u32(self.stream);
        b.put_u64(self.seq);
        b.put_u32(self.ts);
        b.put_u8(self.pt);
        b.put_i8(self.audio_level.unwrap_or(0));
        b.put_u8(self.video_orientation.unwrap_or(0));
        b.put_u64(self.received_us);
        b.put_u16(payload.len() as u16);
        b.put_slice(payload);
        b.freeze()
    }

    /// Reads one datagram. Anything that is not exactly what `encode` writes is an error.
    pub fn decode(buf: &[u8]) -> Result<RelayPacket, WireError> {
        if let Some(&v) = buf.first() {
            if v != VERSION {
                return Err(WireError::Version(v));
            }
        }
        if buf.len() < HEADER_LEN {
            return Err(WireError::Short { len: buf.len() });
        }
        let flags = buf[1];
        if flags & !F_ALL != 0 {
            return Err(WireError::Flags(flags & !F_ALL));
        }
        if flags & F_VOICE != 0 && flags & F_VOICE_KNOWN == 0 {
            return Err(WireError::Flags(F_VOICE));
        }
        let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[i..i + 8]);
            u64::from_be_bytes(a)
        };
        let said = u16::from_be_bytes([buf[29], buf[30]]) as usize;
        let has = buf.len() - HEADER_LEN;
        if said != has {
            return Err(WireError::PayloadLength { said, has });
        }
        Ok(RelayPacket {
            stream: u32_at(2),
            seq: u64_at(6),
            ts: u32_at(14),
            pt: buf[18],
            marker: flags & F_MARKER != 0,
            audio_level: (flags & F_AUDIO_LEVEL != 0).then_some(buf[19] as i8),
            voice_activity: (flags & F_VOICE_KNOWN != 0).then_some(flags & F_VOICE != 0),
            video_orientation: (flags & F_ORIENTATION != 0).then_some(buf[20]),
            received_us: u64_at(21),
            repair: flags & F_REPAIR != 0,
            payload: bytes::Bytes::copy_from_slice(&buf[HEADER_LEN..]),
        })
    }
}

/// Largest control frame accepted: a room's track list is a few kilobytes; anything near
/// this is a broken or hostile peer.
pub const MAX_FRAME: usize = 1 << 20;

/// One control message as a frame: u32 big-endian length, then that many bytes of JSON.
pub fn encode_frame(c: &Control) -> Result<bytes::Bytes, WireError> {
    let json = serde_json::to_vec(c).map_err(|e| WireError::Json(e.to_string()))?;
    if json.len() > MAX_FRAME {
        return Err(WireError::FrameTooLarge {
            len: json.len(),
            max: MAX_FRAME,
        });
    }
    let mut b = Vec::with_capacity(4 + json.len());
    b.extend_from_slice(&(json.len() as u32).to_be_bytes());
    b.extend_from_slice(&json);
    Ok(b.into())
}

/// Cuts a byte stream into control frames, whatever the sizes of the reads that fed it.
/// After an error the stream is unusable (framing is lost) and every `pop` repeats it.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: bytes::BytesMut,
    failed: Option<WireError>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete frame, `Ok(None)` until one has fully arrived.
    pub fn pop(&mut self) -> Result<Option<Control>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(self.fail(WireError::FrameTooLarge {
                len,
                max: MAX_FRAME,
            }));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf.split_to(4 + len);
        match serde_json::from_slice(&frame[4..]) {
            Ok(c) => Ok(Some(c)),
            Err(e) => Err(self.fail(WireError::Json(e.to_string()))),
        }
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.buf.clear();
        self.failed = Some(e.clone());
        e
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(secret: &str, material: &[u8]) -> HmacSha256 {
    use hmac::Mac;
    // HMAC takes keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    m.update(b"classroom-relay hello v1\0");
    m.update(material);
    m
}

/// The Hello proof: hex HMAC-SHA256 keyed by the cluster secret over `material`, which the
/// link binds to one connection (TLS keying material exported from it, plus who says hello),
/// so a proof overheard or logged cannot be replayed on another connection.
pub fn proof(secret: &str, material: &[u8]) -> String {
    use hmac::Mac;
    hex::encode(mac(secret, material).finalize().into_bytes())
}

/// Checks a Hello proof in constant time; a proof that is not hex is simply wrong.
pub fn verify_proof(secret: &str, material: &[u8], proof: &str) -> bool {
    use hmac::Mac;
    match hex::decode(proof) {
        Ok(bytes) => mac(secret, material).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    fn packet() -> RelayPacket {
        RelayPacket {
            stream: 7,
            seq: 0x1_0000_0002,
            ts: 0xDEAD_BEEF,
            pt: 111,
            marker: true,
            audio_level: Some(-42),
            voice_activity: Some(true),
            video_orientation: None,
            received_us: 1_764_470_000_123_456,
            repair: false,
            payload: bytes::Bytes::from_static(b"opus frame bytes"),
        }
    }

    #[test]
    fn packet_round_trips_with_every_optional_field() {
        let p = packet();
        let enc = p.encode();
        assert_eq!(enc.len(), p.encoded_len());
        assert_eq!(enc[0], VERSION);
        assert_eq!(RelayPacket::decode(&enc), Ok(p.clone()));

        let video = RelayPacket {
            marker: false,
            repair: true,
            audio_level: None,
            voice_activity: Some(false),
            video_orientation: Some(3),
            payload: bytes::Bytes::new(),
            ..p
        };
        assert_eq!(RelayPacket::decode(&video.encode()), Ok(video.clone()));
        let bare = RelayPacket {
            voice_activity: None,
            video_orientation: None,
            ..video
        };
        assert_eq!(RelayPacket::decode(&bare.encode()), Ok(bare));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let enc = packet().encode();
        for len in 0..enc.len() {
            let r = RelayPacket::decode(&enc[..len]);
            assert!(r.is_err(), "truncated to {len} bytes decoded as {r:?}");
        }
        // and a byte too many is a lying length as well
        let mut long = enc.to_vec();
        long.push(0);
        assert_eq!(
            RelayPacket::decode(&long),
            Err(WireError::PayloadLength { said: 16, has: 17 })
        );
    }

    #[test]
    fn wrong_version_flags_and_lengths_are_refused() {
        let enc = packet().encode().to_vec();
        let mut v = enc.clone();
        v[0] = 0x80;
        assert_eq!(RelayPacket::decode(&v), Err(WireError::Version(0x80)));
        let mut f = enc.clone();
        f[1] |= 0x80;
        assert_eq!(RelayPacket::decode(&f), Err(WireError::Flags(0x80)));
        let mut voice = enc.clone();
        voice[1] = F_VOICE;
        assert!(RelayPacket::decode(&voice).is_err());
        let mut lie = enc.clone();
        lie[29] = 0x10;
        assert!(matches!(
            RelayPacket::decode(&lie),
            Err(WireError::PayloadLength { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic_and_are_mostly_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = rng.random_range(0..200);
            let mut b = vec![0u8; len];
            rng.fill_bytes(&mut b);
            // half of them start like a real datagram, to reach the deeper checks
            if rng.random_bool(0.5) && len > 0 {
                b[0] = VERSION;
            }
            if RelayPacket::decode(&b).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted < 50, "{accepted} random datagrams decoded");
        // random flips in a valid datagram either decode to something or fail cleanly
        let enc = packet().encode().to_vec();
        for i in 0..enc.len() {
            for bit in 0..8 {
                let mut b = enc.clone();
                b[i] ^= 1 << bit;
                let _ = RelayPacket::decode(&b);
            }
        }
    }

    #[test]
    fn control_frames_survive_any_split() {
        let msgs = vec![
            Control::Hello {
                node: "a".into(),
                region: "county-1".into(),
                proof: proof("s", b"m"),
            },
            Control::Subscribe {
                room: "math".into(),
            },
            Control::Nack {
                room: "math".into(),
                stream: 2,
                seqs: vec![1, 2, 70_000],
            },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend_from_slice(&encode_frame(m).unwrap());
        }
        for chunk in [1, 2, 3, 5, 17, stream.len()] {
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                r.push(c);
                while let Some(m) = r.pop().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "chunks of {chunk}");
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn oversized_and_bad_frames_are_errors_that_stick() {
        let mut r = FrameReader::new();
        r.push(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert!(matches!(r.pop(), Err(WireError::FrameTooLarge { .. })));
        r.push(
            &encode_frame(&Control::Welcome {
                node: "b".into(),
                region: String::new(),
            })
            .unwrap(),
        );
        assert!(r.pop().is_err(), "framing is lost after an error");

        for bad in [
            &b"{\"type\":\"teleport\"}"[..],
            b"not json",
            b"{\"type\":\"welcome\"}",
        ] {
            let mut r = FrameReader::new();
            r.push(&(bad.len() as u32).to_be_bytes());
            r.push(bad);
            assert!(matches!(r.pop(), Err(WireError::Json(_))), "{bad:?}");
        }
        let huge = Control::Gone {
            room: "r".into(),
            reason: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(
            encode_frame(&huge),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn proof_checks_secret_and_material() {
        let p = proof("cluster secret", b"exported key material");
        assert_eq!(p.len(), 64);
        assert!(verify_proof("cluster secret", b"exported key material", &p));
        assert!(!verify_proof("other secret", b"exported key material", &p));
        assert!(!verify_proof("cluster secret", b"another connection", &p));
        assert!(!verify_proof(
            "cluster secret",
            b"exported key material",
            "zz"
        ));
        assert!(!verify_proof(
            "cluster secret",
            b"exported key material",
            &p[..62]
        ));
        assert!(!verify_proof(
            "cluster secret",
            b"exported key material",
            ""
        ));
    }
}
