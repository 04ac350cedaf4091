//! VP8 payload descriptor continuity (RFC 7741): PictureID, TL0PICIDX and KEYIDX.
//!
//! Each simulcast layer (and each publisher session) numbers its pictures on its own. A
//! receiver that sees these numbers jump backwards at a layer switch treats the new frames as
//! old and stalls until the next keyframe, so the SFU keeps one sequence per subscriber slot,
//! continued across every switch, as it does for RTP sequence numbers.

use super::SourceId;

/// The descriptor fields of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Fields {
    pub picture_id: Option<u16>,
    /// True when the PictureID field is 15 bits wide (else 7).
    pub picture_id_15: bool,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
}

const PID_MOD: u16 = 1 << 15;

fn pid_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & (PID_MOD - 1);
    d != 0 && d < PID_MOD / 2
}

fn u8_newer(a: u8, b: u8) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 128
}

#[derive(Debug, Clone, Copy)]
struct Offsets {
    source: SourceId,
    pid: u16,
    tl0: u8,
    key: u8,
}

#[derive(Debug, Clone, Default)]
pub struct Vp8Rewriter {
    offsets: Option<Offsets>,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
    last_key: Option<u8>,
}

impl Vp8Rewriter {
    /// Continue the sequences with `source`, whose first forwarded packet has `first`.
    pub fn switch_to(&mut self, source: SourceId, first: Vp8Fields) {
        let pid = match (self.last_pid, first.picture_id) {
            (Some(last), Some(p)) => last.wrapping_add(1).wrapping_sub(p) & (PID_MOD - 1),
            _ => 0,
        };
        let tl0 = match (self.last_tl0, first.tl0_pic_idx) {
            (Some(last), Some(t)) => last.wrapping_add(1).wrapping_sub(t),
            _ => 0,
        };
        let key = match (self.last_key, first.key_idx) {
            (Some(last), Some(k)) => last.wrapping_add(1).wrapping_sub(k) & 0x1f,
            _ => 0,
        };
        self.offsets = Some(Offsets {
            source,
            pid,
            tl0,
            key,
        });
    }

    /// The rewritten fields for a packet of the current source.
    pub fn rewrite(&mut self, source: SourceId, f: Vp8Fields) -> Option<Vp8Fields> {
        let o = self.offsets.filter(|o| o.source == source)?;
        let width_mask = if f.picture_id_15 { PID_MOD - 1 } else { 0x7f };
        let out = Vp8Fields {
            picture_id: f.picture_id.map(|p| p.wrapping_add(o.pid) & width_mask),
            picture_id_15: f.picture_id_15,
            tl0_pic_idx: f.tl0_pic_idx.map(|t| t.wrapping_add(o.tl0)),
            key_idx: f.key_idx.map(|k| k.wrapping_add(o.key) & 0x1f),
        };
        if let Some(p) = out.picture_id {
            if self.last_pid.is_none_or(|l| pid_newer(p, l)) {
                self.last_pid = Some(p);
            }
        }
        if let Some(t) = out.tl0_pic_idx {
            if self.last_tl0.is_none_or(|l| u8_newer(t, l)) {
                self.last_tl0 = Some(t);
            }
        }
        if let Some(k) = out.key_idx {
            self.last_key = Some(k);
        }
        Some(out)
    }
}

/// Reads the descriptor fields (and the PictureID width) from a VP8 RTP payload.
pub fn parse_fields(p: &[u8]) -> Option<Vp8Fields> {
    let b0 = *p.first()?;
    let mut f = Vp8Fields::default();
    if b0 & 0x80 == 0 {
        return Some(f);
    }
    let x = *p.get(1)?;
    let mut i = 2;
    if x & 0x80 != 0 {
        let m = *p.get(i)?;
        if m & 0x80 != 0 {
            let lo = *p.get(i + 1)?;
            f.picture_id = Some((((m & 0x7f) as u16) << 8) | lo as u16);
            f.picture_id_15 = true;
            i += 2;
        } else {
            f.picture_id = Some(m as u16);
            i += 1;
        }
    }
    if x & 0x40 != 0 {
        f.tl0_pic_idx = Some(*p.get(i)?);
        i += 1;
    }
    if x & 0x10 != 0 {
        f.key_idx = Some(*p.get(i)? & 0x1f);
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pid: u16, tl0: u8) -> Vp8Fields {
        Vp8Fields {
            picture_id: Some(pid),
            picture_id_15: true,
            tl0_pic_idx: Some(tl0),
            key_idx: None,
        }
    }

    #[test]
    fn continuous_across_a_backwards_switch() {
        let mut r = Vp8Rewriter::default();
        let (a, b) = (SourceId(1), SourceId(2));
        r.switch_to(a, fields(30_000, 200));
        let mut last = None;
        for i in 0..10u16 {
            last = r.rewrite(a, fields(30_000 + i, 200u8.wrapping_add(i as u8)));
        }
        let last = last.unwrap();
        // The first source keeps its own numbering.
        assert_eq!(last.picture_id, Some(30_009));
        // The new layer numbers far behind the old one.
        r.switch_to(b, fields(5, 17));
        let first = r.rewrite(b, fields(5, 17)).unwrap();
        assert_eq!(first.picture_id, Some(30_010));
        assert_eq!(
            first.tl0_pic_idx,
            Some(last.tl0_pic_idx.unwrap().wrapping_add(1))
        );
        // Later packets of the new layer follow with the same offset, across the 15-bit wrap.
        let later = r.rewrite(b, fields(32_767, 17)).unwrap();
        assert_eq!(later.picture_id, Some((30_010 + 32_767 - 5) & 0x7fff));
        // Packets of the old layer are not rewritten any more.
        assert_eq!(r.rewrite(a, fields(30_010, 210)), None);
    }

    #[test]
    fn parses_descriptors() {
        // X, S, I|L|K with 15-bit picture id 0x1234, TL0PICIDX 7, TID/KEYIDX byte.
        let p = [0x90, 0xd0, 0x92, 0x34, 0x07, 0x25, 0x00];
        let f = parse_fields(&p).unwrap();
        assert_eq!(f.picture_id, Some(0x1234));
        assert!(f.picture_id_15);
        assert_eq!(f.tl0_pic_idx, Some(7));
        assert_eq!(f.key_idx, Some(5));
        assert_eq!(parse_fields(&[0x10, 0x00]), Some(Vp8Fields::default()));
        assert_eq!(parse_fields(&[0x90, 0x80]), None);
        assert_eq!(parse_fields(&[]), None);
    }
}
