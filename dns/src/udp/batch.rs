//! Many datagrams per system call: `recvmmsg(2)` fills up to [`BATCH`] buffers at once, and the
//! replies a reader's turn builds go out with one `sendmmsg(2)`, as Knot's workers do. Before,
//! each datagram cost a `recvfrom` and each reply a `sendto`; the kernel's share of a query (about
//! 10 µs of Shoal's 24 µs at 10,000 instances) was mostly that per-call overhead.
//!
//! Both run through tokio's `try_io`, so the socket's readiness is cleared exactly when the kernel
//! says it would block, and the reader's loop stays the same non-blocking one. These are the only
//! `unsafe` blocks of the crate: plain arrays of `mmsghdr`/`iovec`/`sockaddr_storage` handed to
//! the kernel for the length of one call, their pointers set just before it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams read, or replies sent, per system call.
pub const BATCH: usize = 32;

/// A reader's receive buffers.
pub(crate) struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Datagrams filled by the last [`RecvBatch::recv`].
    filled: usize,
}

// SAFETY: the raw pointers in the C structs point into the batch's own heap arrays (or the
// queued replies it owns); they are set right before each call and never read after it, so the
// batch may move to another thread between calls (a tokio task between polls).
unsafe impl Send for RecvBatch {}
// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl RecvBatch {
    /// [`BATCH`] buffers of `size` bytes (longer datagrams are cut, as by `recv_from`).
    pub(crate) fn new(size: usize) -> RecvBatch {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; size].into_boxed_slice()).collect(),
            // SAFETY: all-zero bytes are a valid (empty) sockaddr_storage, iovec and mmsghdr.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            msgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            filled: 0,
        }
    }

    /// Reads what is waiting, up to [`BATCH`] datagrams, without waiting: the count, or
    /// `WouldBlock` if there is none.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.filled = 0;
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.bufs[i].len() };
            // SAFETY: zeroing a plain C struct.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&raw mut self.addrs[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
            self.msgs[i] = libc::mmsghdr { msg_hdr: hdr, msg_len: 0 };
        }
        let fd = socket.as_raw_fd();
        let msgs = self.msgs.as_mut_ptr();
        let n = socket.try_io(Interest::READABLE, || {
            // SAFETY: `msgs` holds BATCH headers whose name and iovec pointers point into this
            // batch's own arrays, alive and not otherwise borrowed for the call.
            let n =
                unsafe { libc::recvmmsg(fd, msgs, BATCH as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
            if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
        })?;
        self.filled = n;
        Ok(n)
    }

    /// Datagram `i` of the last read and where it came from (`None`: not an IP source).
    pub(crate) fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        assert!(i < self.filled, "datagram {i} of {}", self.filled);
        let len = (self.msgs[i].msg_len as usize).min(self.bufs[i].len());
        (from_storage(&self.addrs[i]), &self.bufs[i][..len])
    }
}

/// Replies waiting to go out with one `sendmmsg`.
pub(crate) struct SendBatch {
    replies: Vec<(SocketAddr, Vec<u8>)>,
    /// Buffers of sent replies, reused.
    spare: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl SendBatch {
    pub(crate) fn new() -> SendBatch {
        SendBatch {
            replies: Vec::with_capacity(BATCH),
            spare: Vec::with_capacity(BATCH),
            // SAFETY: as in RecvBatch::new.
            addrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            msgs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        }
    }

    /// A buffer to write the next reply into.
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Gives back a buffer that holds no reply.
    pub(crate) fn give_back(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }

    /// Queues `reply` to `dst`; `true` when the batch is full (send it).
    pub(crate) fn push(&mut self, dst: SocketAddr, reply: Vec<u8>) -> bool {
        self.replies.push((dst, reply));
        self.replies.len() >= BATCH
    }

    /// Sends what is queued with as few `sendmmsg` calls as the kernel takes; what it would not
    /// take without blocking is handed to `blocked`, one reply at a time. Every buffer is kept
    /// for reuse.
    pub(crate) fn flush(&mut self, socket: &UdpSocket, mut blocked: impl FnMut(SocketAddr, &[u8])) {
        let mut done = 0;
        while done < self.replies.len() {
            let count = (self.replies.len() - done).min(BATCH);
            for (i, (dst, reply)) in self.replies[done..done + count].iter().enumerate() {
                let namelen = to_storage(*dst, &mut self.addrs[i]);
                self.iovs[i] = libc::iovec { iov_base: reply.as_ptr() as *mut _, iov_len: reply.len() };
                // SAFETY: zeroing a plain C struct.
                let mut hdr: libc::msghdr = unsafe { zeroed() };
                hdr.msg_name = (&raw mut self.addrs[i]).cast();
                hdr.msg_namelen = namelen;
                hdr.msg_iov = &raw mut self.iovs[i];
                hdr.msg_iovlen = 1;
                self.msgs[i] = libc::mmsghdr { msg_hdr: hdr, msg_len: 0 };
            }
            // Straight to the kernel, not through tokio's readiness: a UDP socket is writable but
            // for a full send buffer, and what would block then goes to `blocked`, whose sending
            // waits on tokio's readiness as usual.
            // SAFETY: `count` ≤ BATCH headers pointing into this batch's arrays and into the
            // queued replies, which are neither moved nor dropped during the call.
            let n = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), self.msgs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT)
            };
            match n {
                n if n > 0 => done += n as usize,
                _ => {
                    // Would block (a full send buffer) or failed for the first reply: that one
                    // goes its own way (a task that waits, or a logged error), and the rest after.
                    let (dst, reply) = &self.replies[done];
                    blocked(*dst, reply);
                    done += 1;
                }
            }
        }
        for (_, mut reply) in self.replies.drain(..) {
            reply.clear();
            self.spare.push(reply);
        }
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into the storage.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6) into the storage.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Writes `addr` into `s`; its length.
fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let out = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
            out.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let out = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_go_to_the_kernel_and_back_unchanged() {
        let addrs: [SocketAddr; 3] =
            ["127.0.0.1:53".parse().unwrap(), "10.1.2.3:65535".parse().unwrap(), "[2001:db8::7]:8600".parse().unwrap()];
        for a in addrs {
            // SAFETY: zeroed storage is valid.
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            to_storage(a, &mut s);
            assert_eq!(from_storage(&s), Some(a));
        }
    }

    #[tokio::test]
    async fn a_batch_goes_out_and_comes_back_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (s, c) = (server.local_addr().unwrap(), client.local_addr().unwrap());
        let mut out = SendBatch::new();
        for i in 0..(BATCH + 5) as u16 {
            out.push(s, i.to_be_bytes().to_vec());
        }
        let mut blocked = 0;
        out.flush(&client, |_, _| blocked += 1);
        assert_eq!(blocked, 0, "loopback takes all");
        let mut inb = RecvBatch::new(512);
        let mut got = Vec::new();
        while got.len() < BATCH + 5 {
            server.readable().await.unwrap();
            match inb.recv(&server) {
                Ok(n) => {
                    for i in 0..n {
                        let (src, data) = inb.get(i);
                        assert_eq!(src, Some(c));
                        got.push(u16::from_be_bytes([data[0], data[1]]));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, (0..(BATCH + 5) as u16).collect::<Vec<_>>());
    }
}
