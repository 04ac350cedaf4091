//! Batched UDP I/O: `recvmmsg`/`sendmmsg` on Linux move many datagrams per system call, which
//! matters when one socket carries every classroom of a county. Other platforms fall back to
//! one datagram per call.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive buffer per datagram; larger datagrams are truncated and fail to parse, as they should.
pub const RECV_SIZE: usize = 2048;

pub struct RecvBatch {
    bufs: Vec<[u8; RECV_SIZE]>,
    lens: Vec<usize>,
    addrs: Vec<Option<SocketAddr>>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0; RECV_SIZE]; BATCH],
            lens: vec![0; BATCH],
            addrs: vec![None; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last receive, with their source addresses.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        (0..self.count).filter_map(|i| Some((&self.bufs[i][..self.lens[i]], self.addrs[i]?)))
    }
}

/// Receives up to [`BATCH`] datagrams; `Ok(0)` never happens (WouldBlock is an error).
pub fn recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        linux::recv(socket, batch)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (n, addr) = socket.recv_from(&mut batch.bufs[0])?;
        batch.lens[0] = n;
        batch.addrs[0] = Some(addr);
        batch.count = 1;
        Ok(1)
    }
}

/// Sends datagrams (payload, destination); returns how many were sent before WouldBlock.
pub fn send_batch(socket: &UdpSocket, packets: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        linux::send(socket, packets)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut sent = 0;
        for (p, to) in packets {
            match socket.send_to(p, to) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && sent > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    fn to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }

    fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    pub fn recv(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<usize> {
        // SAFETY: zeroed sockaddr_storage / iovec / mmsghdr are valid initial values.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: batch.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: RECV_SIZE,
            };
            msgs[i].msg_hdr.msg_name = &mut names[i] as *mut _ as *mut libc::c_void;
            msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points at live buffers owned by this frame or by `batch`.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            batch.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            batch.lens[i] = (msgs[i].msg_len as usize).min(RECV_SIZE);
            batch.addrs[i] = from_sockaddr(&names[i]);
        }
        batch.count = n;
        Ok(n)
    }

    pub fn send(socket: &UdpSocket, packets: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
        let mut sent_total = 0;
        for chunk in packets.chunks(BATCH) {
            let mut names = Vec::with_capacity(chunk.len());
            let mut iovs = Vec::with_capacity(chunk.len());
            for (p, to) in chunk {
                names.push(to_sockaddr(to));
                iovs.push(libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                });
            }
            // SAFETY: zeroed mmsghdr is valid; fields are filled below.
            let mut msgs: Vec<libc::mmsghdr> =
                (0..chunk.len()).map(|_| unsafe { zeroed() }).collect();
            for i in 0..chunk.len() {
                msgs[i].msg_hdr.msg_name = &mut names[i].0 as *mut _ as *mut libc::c_void;
                msgs[i].msg_hdr.msg_namelen = names[i].1;
                msgs[i].msg_hdr.msg_iov = &mut iovs[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: pointers reference `names`, `iovs` and `packets`, all alive for the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    msgs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if sent_total > 0 && err.kind() == io::ErrorKind::WouldBlock {
                    return Ok(sent_total);
                }
                return Err(err);
            }
            sent_total += n as usize;
            if (n as usize) < chunk.len() {
                break;
            }
        }
        Ok(sent_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + i as usize]).collect();
        let packets: Vec<(&[u8], SocketAddr)> =
            payloads.iter().map(|p| (p.as_slice(), to)).collect();
        assert_eq!(send_batch(&a, &packets).unwrap(), 40);
        let mut batch = RecvBatch::default();
        let mut got = vec![];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            match recv_batch(&b, &mut batch) {
                Ok(_) => {
                    for (p, from) in batch.iter() {
                        assert_eq!(from, a.local_addr().unwrap());
                        got.push(p.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads);
    }
}
