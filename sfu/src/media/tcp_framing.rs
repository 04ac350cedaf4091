//! RFC 4571 framing for ICE-TCP: every packet is preceded by its 16-bit length.

/// Frames larger than this are not WebRTC packets; the connection is dropped.
pub const MAX_FRAME: usize = 1500 * 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Reassembles frames from a TCP byte stream.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete frame, if any. An error means the peer is not speaking RFC 4571.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if len > MAX_FRAME {
            return Err(FramingError::TooLarge(len));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        let frame = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        Ok(Some(frame))
    }
}

/// Appends one framed packet to an output buffer.
pub fn frame_into(out: &mut Vec<u8>, packet: &[u8]) {
    let len = packet.len().min(u16::MAX as usize) as u16;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&packet[..len as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_joined_frames() {
        let mut wire = vec![];
        frame_into(&mut wire, b"hello");
        frame_into(&mut wire, b"");
        frame_into(&mut wire, &[9; 1200]);
        let mut d = Deframer::default();
        let mut got = vec![];
        // Feed one byte at a time: TCP may split anywhere.
        for b in &wire {
            d.push(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], b"hello");
        assert!(got[1].is_empty());
        assert_eq!(got[2].len(), 1200);
    }

    #[test]
    fn oversized_frame_is_an_error() {
        let mut d = Deframer::default();
        d.push(&[0xff, 0xff, 1, 2]);
        assert_eq!(d.next_frame(), Err(FramingError::TooLarge(0xffff)));
    }
}
