//! Facts read from encoded frames: whether a frame is a keyframe, and its picture size.

/// Video codecs the agent sends and plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl std::str::FromStr for VideoCodec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "vp8" => Ok(VideoCodec::Vp8),
            "h264" | "h.264" => Ok(VideoCodec::H264),
            other => Err(format!("unknown video codec {other:?} (vp8 or h264)")),
        }
    }
}

/// A VP8 frame is a keyframe when bit 0 of its frame tag is clear (RFC 6386 section 9.1).
pub fn vp8_is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// Width and height from a VP8 keyframe header (frame tag, start code 9d 01 2a, then 14-bit
/// sizes). `None` for interframes and truncated data.
pub fn vp8_size(frame: &[u8]) -> Option<(u32, u32)> {
    if !vp8_is_keyframe(frame) || frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w > 0 && h > 0).then_some((w as u32, h as u32))
}

/// NAL unit types in an Annex B (start-code delimited) H.264 access unit.
fn h264_nal_types(au: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + 3 < au.len() {
            let three = au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1;
            i += 1;
            if three {
                i += 2;
                return Some(au[i] & 0x1f);
            }
        }
        None
    })
}

/// An H.264 access unit is a keyframe when it holds an IDR slice (NAL type 5).
pub fn h264_is_keyframe(au: &[u8]) -> bool {
    h264_nal_types(au).any(|t| t == 5)
}

pub fn is_keyframe(codec: VideoCodec, frame: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_is_keyframe(frame),
        VideoCodec::H264 => h264_is_keyframe(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 320x180 VP8 keyframe header as vp8enc writes it.
    const VP8_KEY: [u8; 10] = [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00];

    #[test]
    fn vp8_keyframe_and_size() {
        assert!(vp8_is_keyframe(&VP8_KEY));
        assert_eq!(vp8_size(&VP8_KEY), Some((320, 180)));
        let mut inter = VP8_KEY;
        inter[0] |= 1;
        assert!(!vp8_is_keyframe(&inter));
        assert_eq!(vp8_size(&inter), None);
        assert_eq!(vp8_size(&VP8_KEY[..8]), None);
        assert!(!vp8_is_keyframe(&[]));
    }

    #[test]
    fn vp8_bad_start_code_has_no_size() {
        let mut bad = VP8_KEY;
        bad[4] = 0;
        assert_eq!(vp8_size(&bad), None);
    }

    #[test]
    fn h264_idr_is_keyframe() {
        // SPS, PPS, IDR slice with 4- and 3-byte start codes.
        let key = [
            0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88,
        ];
        assert!(h264_is_keyframe(&key));
        let delta = [0, 0, 0, 1, 0x41, 0x9a, 0x02];
        assert!(!h264_is_keyframe(&delta));
        assert!(!h264_is_keyframe(&[0, 0, 1]));
        assert_eq!(h264_nal_types(&key).collect::<Vec<_>>(), vec![7, 8, 5]);
    }

    #[test]
    fn codec_names() {
        assert_eq!("VP8".parse::<VideoCodec>(), Ok(VideoCodec::Vp8));
        assert_eq!("h264".parse::<VideoCodec>(), Ok(VideoCodec::H264));
        assert!("av1".parse::<VideoCodec>().is_err());
    }
}
