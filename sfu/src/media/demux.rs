//! Which session does a datagram on the shared media port belong to?
//!
//! STUN binding requests carry `USERNAME = <our ufrag>:<their ufrag>`, so they are routed by
//! our ufrag (which also follows a peer that changed address). Everything else (DTLS, SRTP,
//! SRTCP) is routed by the source address a STUN check has already tied to a session.

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// RFC 7983 first-byte ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    Stun,
    Dtls,
    Rtp,
    Unknown,
}

pub fn classify(buf: &[u8]) -> PacketClass {
    match buf.first() {
        Some(0..=3) if is_stun(buf) => PacketClass::Stun,
        Some(20..=63) => PacketClass::Dtls,
        Some(128..=191) if buf.len() >= 12 => PacketClass::Rtp,
        _ => PacketClass::Unknown,
    }
}

fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[4..8] == STUN_MAGIC && buf[0] & 0xc0 == 0 && buf.len().is_multiple_of(4)
}

/// Our ufrag from a STUN message's USERNAME attribute, if it has one.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    if !is_stun(buf) {
        return None;
    }
    let declared = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(20..20 + declared)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let len = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + len)?;
        if typ == ATTR_USERNAME {
            let s = std::str::from_utf8(value).ok()?;
            return s.split(':').next().filter(|u| !u.is_empty());
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(user: &str) -> Vec<u8> {
        let mut attr = vec![];
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn username_routing() {
        let m = stun_with_username("abcd:wxyz1");
        assert_eq!(classify(&m), PacketClass::Stun);
        assert_eq!(stun_local_ufrag(&m), Some("abcd"));
        assert_eq!(stun_local_ufrag(&stun_with_username(":x")), None);
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(classify(&[]), PacketClass::Unknown);
        let mut m = stun_with_username("abcd:wxyz");
        // Lie about the attribute length.
        m[22] = 0xff;
        m[23] = 0xff;
        assert_eq!(stun_local_ufrag(&m), None);
        // Lie about the message length.
        let mut m2 = stun_with_username("abcd:wxyz");
        m2[2] = 0xff;
        assert_eq!(stun_local_ufrag(&m2), None);
        for n in 0..64u8 {
            let buf: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            let _ = classify(&buf);
            let _ = stun_local_ufrag(&buf);
        }
        assert_eq!(classify(&[22, 254, 253]), PacketClass::Dtls);
        assert_eq!(classify(&[0x80; 12]), PacketClass::Rtp);
    }
}
