//! RFC 2198 redundancy for the teacher's voice toward lossy classrooms: each audio packet also
//! carries the previous one, so a single lost packet costs no audio at all. Used only where the
//! classroom negotiated `red/48000/2` and its link loses packets.

/// Turn redundancy on above this loss fraction, off below the lower one.
pub const RED_ON_LOSS: f32 = 0.01;
pub const RED_OFF_LOSS: f32 = 0.002;
/// Redundancy never reaches further back than this (RFC 2198 allows 14 bits of ticks).
const MAX_OFFSET_TICKS: u32 = (1 << 14) - 1;
const MAX_BLOCK: usize = (1 << 10) - 1;

/// Builds RED payloads from consecutive primary packets of one stream.
#[derive(Debug, Clone, Default)]
pub struct RedEncoder {
    prev: Option<(u32, Vec<u8>)>,
}

impl RedEncoder {
    /// Forget the previous packet (the source changed: its audio does not belong here).
    pub fn reset(&mut self) {
        self.prev = None;
    }

    /// The RED payload for `payload` (primary, payload type `pt`, timestamp `ts`).
    pub fn encode(&mut self, pt: u8, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() * 2 + 5);
        let redundant = self.prev.as_ref().filter(|(pts, data)| {
            let offset = ts.wrapping_sub(*pts);
            offset > 0 && offset <= MAX_OFFSET_TICKS && data.len() <= MAX_BLOCK
        });
        if let Some((pts, data)) = redundant {
            let offset = ts.wrapping_sub(*pts);
            let header: u32 =
                (1 << 31) | ((pt as u32 & 0x7f) << 24) | (offset << 10) | data.len() as u32;
            out.extend_from_slice(&header.to_be_bytes());
            out.push(pt & 0x7f);
            out.extend_from_slice(data);
        } else {
            out.push(pt & 0x7f);
        }
        out.extend_from_slice(payload);
        self.prev = Some((ts, payload.to_vec()));
        out
    }
}

/// Hysteresis on the classroom's reported loss.
pub fn want_red(active: bool, loss: Option<f32>) -> bool {
    match loss {
        Some(l) if l >= RED_ON_LOSS => true,
        Some(l) if l < RED_OFF_LOSS => false,
        _ => active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a RED payload into (pt, ts offset, data) blocks, primary last.
    fn decode(p: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        let mut headers = vec![];
        let mut i = 0;
        while p[i] & 0x80 != 0 {
            let h = u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
            headers.push((
                ((h >> 24) & 0x7f) as u8,
                (h >> 10) & 0x3fff,
                (h & 0x3ff) as usize,
            ));
            i += 4;
        }
        let primary_pt = p[i] & 0x7f;
        i += 1;
        let mut out = vec![];
        for (pt, off, len) in headers {
            out.push((pt, off, p[i..i + len].to_vec()));
            i += len;
        }
        out.push((primary_pt, 0, p[i..].to_vec()));
        out
    }

    #[test]
    fn carries_the_previous_packet() {
        let mut e = RedEncoder::default();
        let first = e.encode(111, 1000, b"aaa");
        assert_eq!(decode(&first), vec![(111, 0, b"aaa".to_vec())]);
        let second = e.encode(111, 1960, b"bbbb");
        assert_eq!(
            decode(&second),
            vec![(111, 960, b"aaa".to_vec()), (111, 0, b"bbbb".to_vec())]
        );
        // Across a big timestamp jump (a reconnect) no redundancy is sent.
        let third = e.encode(111, 900_000, b"c");
        assert_eq!(decode(&third), vec![(111, 0, b"c".to_vec())]);
        e.reset();
        assert_eq!(decode(&e.encode(111, 900_960, b"d")).len(), 1);
    }

    #[test]
    fn hysteresis() {
        assert!(!want_red(false, None));
        assert!(want_red(false, Some(0.02)));
        assert!(want_red(true, Some(0.005)));
        assert!(!want_red(true, Some(0.001)));
        assert!(!want_red(false, Some(0.005)));
    }
}
