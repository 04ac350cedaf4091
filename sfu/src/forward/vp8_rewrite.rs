//! VP8 payload descriptor continuity (RFC 7741): PictureID, TL0PICIDX and KEYIDX.
//!
//! Each simulcast layer (and each publisher session) numbers its pictures on its own. A
//! receiver that sees these numbers jump backwards at a layer switch treats the new frames as
//! old and stalls until the next keyframe, so the SFU keeps one sequence per subscriber slot,
//! continued across every switch, as it does for RTP sequence numbers. Pictures of temporal
//! layers the subscriber does not get are left out of the numbering, so the receiver does not
//! wait for them.

use super::rewrite::Dropped;
use super::SourceId;

/// The descriptor fields of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Fields {
    pub picture_id: Option<u16>,
    /// True when the PictureID field is 15 bits wide (else 7).
    pub picture_id_15: bool,
    pub tl0_pic_idx: Option<u8>,
    pub key_idx: Option<u8>,
    /// Temporal layer of the picture (TID), when the publisher sends temporal layers.
    pub tid: Option<u8>,
    /// S bit with partition index 0: the packet starts a picture.
    pub frame_start: bool,
}

const PID_MOD: u16 = 1 << 15;

impl Vp8Fields {
    /// The mask of this packet's PictureID width (15 or 7 bits).
    pub fn pid_mask(&self) -> u16 {
        if self.picture_id_15 {
            PID_MOD - 1
        } else {
            0x7f
        }
    }
}

/// Whether picture id `a` comes after `b`, wrapping at `mask + 1`.
pub fn pid_newer(a: u16, b: u16, mask: u16) -> bool {
    let d = a.wrapping_sub(b) & mask;
    d != 0 && d <= mask / 2
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
    /// The current source's newest picture id, unwrapped (raw, extended).
    ext_last: Option<(u16, u64)>,
    /// Unwrapped picture ids of the current source that were not forwarded.
    dropped: Dropped,
}

/// A picture id unwrapped against the newest one seen (`None`: the first), with `width_mask`
/// telling 7- from 15-bit ids. Starts high so that older pictures stay positive.
fn unwrap_pid(last: Option<(u16, u64)>, pid: u16, width_mask: u16) -> u64 {
    let Some((raw, ext)) = last else {
        return (1 << 32) + pid as u64;
    };
    let m = width_mask as u64 + 1;
    let d = (pid.wrapping_sub(raw) & width_mask) as u64;
    if d < m / 2 {
        ext + d
    } else {
        ext - (m - d)
    }
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
        self.ext_last = None;
        self.dropped.clear();
    }

    /// The unwrapped id of picture `f` of the current source, remembering the newest.
    fn ext_pid(&mut self, f: &Vp8Fields) -> Option<u64> {
        let pid = f.picture_id?;
        let mask = f.pid_mask();
        let ext = unwrap_pid(self.ext_last, pid, mask);
        if self.ext_last.is_none_or(|(_, e)| ext > e) {
            self.ext_last = Some((pid, ext));
        }
        Some(ext)
    }

    /// Picture `f` of `source` is not forwarded (a temporal layer the subscriber does not get):
    /// the pictures after it are numbered as if it never existed.
    pub fn drop_picture(&mut self, source: SourceId, f: Vp8Fields) {
        if self.offsets.is_some_and(|o| o.source == source) {
            if let Some(ext) = self.ext_pid(&f) {
                self.dropped.add(ext);
            }
        }
    }

    /// Whether picture `f` of `source` was left out (a late packet of it is left out too).
    pub fn was_dropped(&self, source: SourceId, f: Vp8Fields) -> bool {
        let (Some(pid), Some(o)) = (f.picture_id, self.offsets) else {
            return false;
        };
        let mask = f.pid_mask();
        o.source == source && self.dropped.contains(unwrap_pid(self.ext_last, pid, mask))
    }

    /// The rewritten fields for a packet of the current source.
    pub fn rewrite(&mut self, source: SourceId, f: Vp8Fields) -> Option<Vp8Fields> {
        let o = self.offsets.filter(|o| o.source == source)?;
        let width_mask = f.pid_mask();
        // Pictures left out before this one; a picture older than what is remembered keeps
        // the plain offset (it is a late retransmission the receiver has long given up on).
        let ext = self.ext_pid(&f);
        if let Some(e) = ext {
            self.dropped.forwarded(e);
        }
        let skipped = ext.and_then(|e| self.dropped.below(e)).unwrap_or(0);
        let out = Vp8Fields {
            picture_id: f
                .picture_id
                .map(|p| p.wrapping_add(o.pid).wrapping_sub(skipped as u16) & width_mask),
            picture_id_15: f.picture_id_15,
            tl0_pic_idx: f.tl0_pic_idx.map(|t| t.wrapping_add(o.tl0)),
            key_idx: f.key_idx.map(|k| k.wrapping_add(o.key) & 0x1f),
            tid: f.tid,
            frame_start: f.frame_start,
        };
        if let Some(p) = out.picture_id {
            if self.last_pid.is_none_or(|l| pid_newer(p, l, width_mask)) {
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
    let mut f = Vp8Fields {
        frame_start: b0 & 0x10 != 0 && b0 & 0x07 == 0,
        ..Vp8Fields::default()
    };
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
    if x & 0x30 != 0 {
        let b = *p.get(i)?;
        if x & 0x20 != 0 {
            f.tid = Some(b >> 6);
        }
        if x & 0x10 != 0 {
            f.key_idx = Some(b & 0x1f);
        }
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
            tid: None,
            frame_start: true,
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
    fn pictures_left_out_leave_no_gap() {
        let mut r = Vp8Rewriter::default();
        let a = SourceId(1);
        // Across the 15-bit wrap: 32766, 32767 (left out), 0, 1 (left out), 2.
        r.switch_to(a, fields(32_766, 0));
        let pid = |r: &mut Vp8Rewriter, p: u16| r.rewrite(a, fields(p, 0)).unwrap().picture_id;
        assert_eq!(pid(&mut r, 32_766), Some(32_766));
        r.drop_picture(a, fields(32_767, 0));
        assert_eq!(pid(&mut r, 0), Some(32_767));
        r.drop_picture(a, fields(1, 0));
        assert!(r.was_dropped(a, fields(1, 0)));
        assert!(!r.was_dropped(a, fields(0, 0)));
        assert_eq!(pid(&mut r, 2), Some(0));
        // A late packet of a forwarded picture keeps the number it had.
        assert_eq!(pid(&mut r, 0), Some(32_767));
        // Another source's pictures are none of this numbering's business.
        r.drop_picture(SourceId(2), fields(3, 0));
        assert_eq!(pid(&mut r, 3), Some(1));
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
        assert_eq!(f.tid, None, "T bit clear: no temporal layer index");
        assert!(f.frame_start);
        // T and K set: TID 2, Y, KEYIDX 3; a continuation packet (S clear).
        let q = [0x80, 0xf0, 0x92, 0x34, 0x07, 0xa3, 0x00];
        let g = parse_fields(&q).unwrap();
        assert_eq!((g.tid, g.key_idx, g.frame_start), (Some(2), Some(3), false));
        assert_eq!(
            parse_fields(&[0x10, 0x00]),
            Some(Vp8Fields {
                frame_start: true,
                ..Vp8Fields::default()
            })
        );
        assert_eq!(parse_fields(&[0x90, 0x80]), None);
        assert_eq!(parse_fields(&[]), None);
    }
}
