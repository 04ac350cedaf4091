//! Is this RTP payload the first packet of a keyframe? Switching layers is only safe there.

/// Codecs the SFU forwards. Decided once per payload type from the negotiated parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Audio or video we pass through without looking inside (e.g. G.711, H.265).
    Other,
}

impl Codec {
    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1)
    }
}

/// True when `payload` starts a frame that decodes on its own.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_keyframe(payload),
        Codec::Vp9 => vp9_keyframe(payload),
        Codec::H264 => h264_keyframe(payload),
        Codec::Av1 => av1_keyframe(payload),
        // Audio frames are all independent.
        Codec::Opus | Codec::Other => true,
    }
}

/// RFC 7741: the descriptor, then the VP8 payload header whose P bit is 0 on keyframes.
fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    // S=1 and partition index 0: the first packet of a frame.
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: 7 or 15 bits.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    // The frame tag's P bit; a keyframe also carries the start code 9d 01 2a.
    match p.get(i..i + 6) {
        Some(h) => h[0] & 0x01 == 0 && h[3] == 0x9d && h[4] == 0x01 && h[5] == 0x2a,
        None => false,
    }
}

/// Width and height from the first packet of a VP8 keyframe (for reporting layer sizes).
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u16, u16)> {
    if !vp8_keyframe(p) {
        return None;
    }
    let start = p.windows(3).position(|w| w == [0x9d, 0x01, 0x2a])? + 3;
    let d = p.get(start..start + 4)?;
    let w = u16::from_le_bytes([d[0], d[1]]) & 0x3fff;
    let h = u16::from_le_bytes([d[2], d[3]]) & 0x3fff;
    Some((w, h))
}

/// VP9 payload descriptor (draft-ietf-payload-vp9): I|P|L|F|B|E|V|Z. A keyframe's first packet
/// has B=1 and P=0 (not inter-predicted), and for spatial layers, the base layer.
fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_predicted = b0 & 0x40 != 0;
    let begins_frame = b0 & 0x08 != 0;
    if inter_predicted || !begins_frame {
        return false;
    }
    if b0 & 0x20 != 0 {
        // L: layer indices present; check the spatial id is 0.
        let mut i = 1;
        if b0 & 0x80 != 0 {
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        let Some(&layer) = p.get(i) else { return false };
        let spatial_id = (layer >> 1) & 0x07;
        return spatial_id == 0;
    }
    true
}

/// H.264 (RFC 6184): an IDR slice or SPS in a single NAL, a STAP-A, or the start of a FU-A.
fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        // STAP-A: 2-byte sizes, then NAL units.
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                let Some(&nal) = p.get(i + 2) else {
                    return false;
                };
                if matches!(nal & 0x1f, 5 | 7) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        // FU-A: start bit and the inner NAL type.
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == 5),
        _ => false,
    }
}

/// AV1 RTP aggregation header Z|Y|W|W|N: N=1 starts a new coded video sequence.
fn av1_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|h| h & 0x08 != 0 && h & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8_key(width: u16, height: u16) -> Vec<u8> {
        let mut p = vec![0x90, 0x80, 0x12]; // X, S; I with 7-bit picture id 0x12
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]); // P=0
        p.extend_from_slice(&width.to_le_bytes());
        p.extend_from_slice(&height.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn vp8() {
        let k = vp8_key(1280, 720);
        assert!(starts_keyframe(Codec::Vp8, &k));
        assert_eq!(vp8_keyframe_size(&k), Some((1280, 720)));
        let mut delta = k.clone();
        delta[3] |= 0x01;
        assert!(!starts_keyframe(Codec::Vp8, &delta));
        let mut middle = k.clone();
        middle[0] &= !0x10; // not the start of the frame
        assert!(!starts_keyframe(Codec::Vp8, &middle));
        assert!(!starts_keyframe(Codec::Vp8, &[]));
        assert!(!starts_keyframe(Codec::Vp8, &[0x90]));
        assert!(!starts_keyframe(Codec::Vp8, &k[..5]));
    }

    #[test]
    fn h264() {
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88])); // IDR
        assert!(starts_keyframe(Codec::H264, &[0x67, 0x42])); // SPS
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a])); // non-IDR
                                                               // STAP-A carrying SPS and PPS.
        assert!(starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        assert!(!starts_keyframe(
            Codec::H264,
            &[0x78, 0x00, 0x02, 0x41, 0x42]
        ));
        // Truncated STAP-A must not panic.
        assert!(!starts_keyframe(Codec::H264, &[0x78, 0xff, 0xff]));
        // FU-A start of an IDR, and a middle fragment.
        assert!(starts_keyframe(Codec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(Codec::H264, &[0x7c, 0x05, 0x00]));
    }

    #[test]
    fn vp9_av1_audio() {
        assert!(starts_keyframe(Codec::Vp9, &[0x08, 0x00]));
        assert!(!starts_keyframe(Codec::Vp9, &[0x48, 0x00]));
        assert!(starts_keyframe(Codec::Av1, &[0x18]));
        assert!(!starts_keyframe(Codec::Av1, &[0x10]));
        assert!(starts_keyframe(Codec::Opus, &[]));
    }
}
