//! The UDP side of the server: a reader that shares the server between sources.
//!
//! hickory's own UDP loop spawns a task for every datagram it reads, with no bound. A client that
//! sends faster than the server answers grows that queue without end, and every other query waits
//! behind all of it. Measured (`tests/server.rs`, a 3 s flood from one socket at 50,000–80,000
//! datagrams/s, debug build): another client asking every 10 ms got none of its first 3 queries
//! answered within 1 s, and 6 of 8 when it resent every 200 ms. Through these readers it gets
//! all of its 300 with no resend, p99 about 5 ms (20–50 ms with one reader on a busier machine).
//!
//! ```text
//! socket ──try_recv, ≤ READ_BATCH──▶ Inbox: a queue per source address ──in turn, ≤ ANSWER_BATCH or ANSWER_BUDGET──▶ answer
//!          full queue: dropped        (SOURCE_QUEUE each, QUEUED in all)      ├ name under the domains: at once, inline
//!                                                                             └ must wait (recursor): a task, ≤ WAITING_PER_SOURCE
//! ```
//!
//! Reading is cheap and comes first, and the socket asks for a large receive buffer
//! ([`RECV_BUFFER`]), so a flood does not overflow the kernel's queue onto everyone while one
//! answer is built. Answering takes one datagram per source in turn, so a flood's own backlog
//! delays only itself, and what a source sends beyond its queue is dropped unanswered (it is the
//! one sending too fast). One source alone gets the whole server. There is one reader per core
//! (up to [`MAX_READERS`]) on the one socket, each with its own inbox, so answers are built in
//! parallel as hickory's tasks were (dnsperf from one host, 4 sockets, 100 in flight, release
//! build: 55,000–80,000 answers/s against 44,000–63,000 through hickory's loop, on the same
//! loaded 2-core machine; 1,000 in flight: 65,000 with none lost against 55,000 with 0.5% lost).
//! Sources are addresses, not
//! ports: rotating ports gains a flood nothing. Parsing, the FORMERR of what does not parse and
//! the encoding of replies stay hickory's, in `reply`, which the fuzz target drives too. UDP
//! requests are not logged one by one (hickory logs each at `info`): under a flood that log would
//! be a second flood. Drops are counted and logged at most every [`DROP_LOG_EVERY`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hickory_server::net::BufDnsStreamHandle;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, MessageType, ResponseCode};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::server::{Request, ResponseHandle, ResponseHandler};
use hickory_server::zone_handler::MessageResponseBuilder;
use shoal_model::catalog::snapshot::Snapshot;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cache::{Cached, Rng};
use batch::{RecvBatch, SendBatch};

mod batch;
use crate::server::{DnsError, DnsHandler, no_questions};

/// Readers of the one socket, at most (one per core up to this): they answer in parallel.
pub const MAX_READERS: usize = 4;
/// Datagrams read from the socket before answering some.
pub const READ_BATCH: usize = 1024;
/// Datagrams answered (one per source in turn) before reading again …
pub const ANSWER_BATCH: usize = 32;
/// … or as many as this allows, so the socket is read again before its buffer fills (at least
/// one is answered per turn).
pub const ANSWER_BUDGET: Duration = Duration::from_millis(1);
/// The socket's receive buffer asked for (the kernel caps it at `net.core.rmem_max`): room for
/// the datagrams that arrive while one slow answer is built, a few thousand at 4 MiB.
pub const RECV_BUFFER: usize = 4 << 20;
/// Datagrams of one source address waiting to be answered; more from it are dropped.
pub const SOURCE_QUEUE: usize = 1024;
/// Datagrams waiting in all.
pub const QUEUED: usize = 16384;
/// Answers of one source address left waiting (on the recursor, or on a full send buffer) at
/// once, each in a task of its own; more are dropped.
pub const WAITING_PER_SOURCE: usize = 64;
/// Answers left waiting at once, in all.
pub const WAITING: usize = 1024;
/// The biggest datagram read, as hickory's (longer ones are cut and then fail to parse).
const MAX_DATAGRAM: usize = 4096;
/// How often dropped datagrams are reported.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the server sends back for one UDP datagram from `src`, if anything, with hickory's
/// steps: nothing to what has no header or is a response (answering those would reflect),
/// FORMERR with no question to what does not parse, else the handler's reply, encoded by
/// hickory's `ResponseHandle` for UDP (the client's EDNS buffer, else 512 bytes). `wrap` sees
/// every response on its way (the fuzz target records what the handler asked for).
pub(crate) async fn reply<R: ResponseHandler>(
    handler: &DnsHandler,
    packet: Vec<u8>,
    src: SocketAddr,
    wrap: impl FnOnce(ResponseHandle) -> R,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(&packet)).ok()?;
    match Request::from_bytes(packet, src, Protocol::Udp) {
        Err(error) => {
            debug!(%src, %error, "formerr: the request does not parse");
            let (stream, mut sent) = BufDnsStreamHandle::new(src);
            let mut response_handle = wrap(ResponseHandle::new(src, stream, Protocol::Udp));
            let none = no_questions();
            let formerr = MessageResponseBuilder::new(&none, None).error_msg(&header.metadata, ResponseCode::FormErr);
            if let Err(error) = response_handle.send_response(formerr).await {
                warn!(%src, %error, "failed to encode a formerr");
            }
            drop(response_handle);
            sent.next().now_or_never().flatten().map(|m| m.into_parts().0)
        }
        Ok(request) if request.metadata.message_type == MessageType::Response => None,
        Ok(request) => reply_to(handler, &request, wrap, &handler.snapshot(), rand::random()).await,
    }
}

/// The reply to a parsed `request` (not a response) from `snap`, shuffled with `seed`, encoded by
/// hickory's `ResponseHandle` for UDP: the second half of [`reply`], which the answer cache also
/// runs to fill its entries.
pub(crate) async fn reply_to<R: ResponseHandler>(
    handler: &DnsHandler,
    request: &Request,
    wrap: impl FnOnce(ResponseHandle) -> R,
    snap: &Snapshot,
    seed: u64,
) -> Option<Vec<u8>> {
    let src = request.src();
    let (stream, mut sent) = BufDnsStreamHandle::new(src);
    let response_handle = wrap(ResponseHandle::new(src, stream, Protocol::Udp));
    handler.respond::<_, TokioTime>(request, response_handle, snap, seed).await;
    // The response handle queued its datagram when it sent; every sender is gone by now.
    sent.next().now_or_never().flatten().map(|m| m.into_parts().0)
}

/// The datagrams waiting to be answered, one queue per source address, taken in turn.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queues: HashMap<IpAddr, VecDeque<(SocketAddr, Vec<u8>)>>,
    /// The sources with something waiting, in the order they are served.
    turn: VecDeque<IpAddr>,
    queued: usize,
}

impl Inbox {
    /// Queues `packet`; `false` (dropped) if its source's queue or the inbox is full.
    pub(crate) fn push(&mut self, src: SocketAddr, packet: &[u8]) -> bool {
        if self.queued >= QUEUED {
            return false;
        }
        let queue = self.queues.entry(src.ip()).or_default();
        if queue.len() >= SOURCE_QUEUE {
            return false;
        }
        if queue.is_empty() {
            self.turn.push_back(src.ip());
        }
        queue.push_back((src, packet.to_vec()));
        self.queued += 1;
        true
    }

    /// The next datagram: the oldest of the source whose turn it is.
    pub(crate) fn pop(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let ip = self.turn.pop_front()?;
        let queue = self.queues.get_mut(&ip).expect("a source in turn has a queue");
        let next = queue.pop_front().expect("a source in turn has a datagram");
        self.queued -= 1;
        if queue.is_empty() {
            // Sources come and go: an empty queue is forgotten, so the map holds only the busy.
            self.queues.remove(&ip);
        } else {
            self.turn.push_back(ip);
        }
        Some(next)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }
}

/// The answers left waiting in tasks of their own, per source address.
#[derive(Debug, Default)]
struct Waiting {
    waiting: Mutex<(HashMap<IpAddr, usize>, usize)>,
}

/// One waiting answer's place; given back when dropped.
struct Permit {
    waiting: Arc<Waiting>,
    ip: IpAddr,
}

impl Waiting {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut w = self.waiting.lock().expect("waiting lock");
        let (per_source, total) = &mut *w;
        let mine = per_source.entry(ip).or_default();
        if *mine >= WAITING_PER_SOURCE || *total >= WAITING {
            if *mine == 0 {
                per_source.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Permit { waiting: self.clone(), ip })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut w = self.waiting.waiting.lock().expect("waiting lock");
        let (per_source, total) = &mut *w;
        *total -= 1;
        if let Some(n) = per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&self.ip);
            }
        }
    }
}

/// Datagrams dropped since the last report.
struct Drops {
    count: u64,
    last: Option<IpAddr>,
    since: Instant,
}

impl Drops {
    fn new() -> Drops {
        Drops { count: 0, last: None, since: Instant::now() }
    }

    fn note(&mut self, ip: IpAddr) {
        self.count += 1;
        self.last = Some(ip);
    }

    fn report(&mut self) {
        if self.count == 0 || self.since.elapsed() < DROP_LOG_EVERY {
            return;
        }
        let last = self.last.expect("a drop has a source");
        warn!(
            dropped = self.count,
            %last,
            over = ?self.since.elapsed(),
            "dns datagrams dropped unanswered: a source sends faster than its share is answered"
        );
        *self = Drops::new();
    }
}

/// Whether a reply can go to `src` (hickory's rule: not port 0, not an unspecified or broadcast
/// address).
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0 && !src.ip().is_unspecified() && !matches!(src.ip(), IpAddr::V4(v4) if v4.is_broadcast())
}

/// Runs `readers` readers of `socket` (each with its own inbox: they answer in parallel) until
/// `stop` turns true; `Err` as soon as one fails.
pub(crate) async fn serve_all(
    socket: Arc<UdpSocket>,
    handler: Arc<DnsHandler>,
    stop: watch::Receiver<bool>,
    readers: usize,
) -> Result<(), DnsError> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..readers.max(1) {
        set.spawn(serve(socket.clone(), handler.clone(), stop.clone()));
    }
    while let Some(ended) = set.join_next().await {
        ended.map_err(|e| DnsError::Serve(format!("a udp reader ended: {e}")))??;
    }
    Ok(())
}

/// Answers datagrams on `socket` with `handler` until `stop` turns true; `Err` if the socket
/// fails for good.
pub(crate) async fn serve(
    socket: Arc<UdpSocket>,
    handler: Arc<DnsHandler>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DnsError> {
    let sock = socket2::SockRef::from(&*socket);
    if let Err(error) = sock.set_recv_buffer_size(RECV_BUFFER) {
        warn!(%error, "cannot enlarge the dns socket's receive buffer");
    }
    debug!(bytes = ?sock.recv_buffer_size(), "dns socket receive buffer");
    let mut inbox = Inbox::default();
    let waiting = Arc::new(Waiting::default());
    let mut drops = Drops::new();
    let mut received = RecvBatch::new(MAX_DATAGRAM);
    let mut replies = SendBatch::new();
    let mut rng = Rng::new(rand::random());
    loop {
        let mut read = 0;
        while read < READ_BATCH {
            match received.recv(&socket) {
                Ok(n) => {
                    for i in 0..n {
                        let (src, packet) = received.get(i);
                        let Some(src) = src.filter(|s| answerable(*s)) else { continue };
                        if !inbox.push(src, packet) {
                            drops.note(src.ip());
                        }
                    }
                    read += n;
                    if n < batch::BATCH {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::NotConnected | std::io::ErrorKind::ConnectionAborted) =>
                {
                    return Err(DnsError::Serve(format!("the udp socket failed: {e}")));
                }
                Err(error) => {
                    warn!(%error, "error receiving a dns datagram");
                    break;
                }
            }
        }
        if inbox.is_empty() {
            drops.report();
            tokio::select! {
                ready = socket.readable() => ready.map_err(|e| DnsError::Serve(format!("the udp socket failed: {e}")))?,
                _ = stop.changed() => return Ok(()),
            }
            continue;
        }
        let answering = Instant::now();
        for _ in 0..ANSWER_BATCH {
            let Some((src, packet)) = inbox.pop() else { break };
            let mut out = replies.buffer();
            let sent = match handler.cache().reply(&handler, &packet, src, &mut rng, &mut out) {
                Cached::Sent { .. } => {
                    if replies.push(src, out) {
                        replies.flush(&socket, |dst, reply| send_later(&socket, &waiting, &mut drops, dst, reply));
                    }
                    true
                }
                Cached::Dropped => {
                    replies.give_back(out);
                    true
                }
                Cached::Uncached => {
                    replies.give_back(out);
                    answer(&socket, &handler, &waiting, packet, src).await
                }
            };
            if !sent {
                drops.note(src.ip());
            }
            if answering.elapsed() >= ANSWER_BUDGET {
                break;
            }
        }
        replies.flush(&socket, |dst, reply| send_later(&socket, &waiting, &mut drops, dst, reply));
        drops.report();
        // Under a flood there is always more to read: let the runtime's other tasks run.
        tokio::task::yield_now().await;
        // Stopped, or the server dropped.
        if *stop.borrow() || stop.has_changed().is_err() {
            return Ok(());
        }
    }
}

/// A reply the socket would not take at once (a full send buffer) or could not send: sent by a
/// task of its own if `dst` has room for one, else dropped and counted.
fn send_later(socket: &Arc<UdpSocket>, waiting: &Arc<Waiting>, drops: &mut Drops, dst: SocketAddr, reply: &[u8]) {
    let Some(permit) = waiting.admit(dst.ip()) else {
        drops.note(dst.ip());
        return;
    };
    let (socket, reply) = (socket.clone(), reply.to_vec());
    tokio::spawn(async move {
        if let Err(error) = socket.send_to(&reply, dst).await {
            debug!(%dst, %error, "failed to send a dns reply");
        }
        drop(permit);
    });
}

/// Answers one datagram: at once if nothing has to wait (every name under the domains), else (a
/// forwarded query waiting on the recursor, a reply waiting on a full send buffer) in a task of
/// its own if the source has room for one. `false` if it was dropped for want of room.
async fn answer(
    socket: &Arc<UdpSocket>,
    handler: &Arc<DnsHandler>,
    waiting: &Arc<Waiting>,
    packet: Vec<u8>,
    src: SocketAddr,
) -> bool {
    let (socket, handler) = (socket.clone(), handler.clone());
    let mut work = Box::pin(async move {
        if let Some(bytes) = reply(&handler, packet, src, |h| h).await
            && let Err(error) = socket.send_to(&bytes, src).await
        {
            debug!(%src, %error, "failed to send a dns reply");
        }
    });
    let done = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx).is_ready())).await;
    if done {
        return true;
    }
    let Some(permit) = waiting.admit(src.ip()) else { return false };
    tokio::spawn(async move {
        work.await;
        drop(permit);
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn sources_are_served_in_turn_and_a_full_queue_drops() {
        let (a, b, c) = (from([10, 0, 0, 1], 1000), from([10, 0, 0, 2], 1000), from([10, 0, 0, 3], 1000));
        let mut inbox = Inbox::default();
        for i in 0..SOURCE_QUEUE {
            assert!(inbox.push(a, &[i as u8]), "a's datagram {i} queued");
        }
        assert!(!inbox.push(a, b"over"), "a's queue is full");
        // Another port of the same address is the same source.
        assert!(!inbox.push(from([10, 0, 0, 1], 2000), b"over"), "per address, not per port");
        assert!(inbox.push(b, b"b1") && inbox.push(b, b"b2") && inbox.push(c, b"c1"));
        let order: Vec<u8> = (0..6).map(|_| inbox.pop().expect("queued").1[0]).collect();
        assert_eq!(order, vec![0, b'b', b'c', 1, b'b', 2], "a, b, c in turn, each oldest first");
        let mut left = 0;
        while let Some((src, _)) = inbox.pop() {
            assert_eq!(src, a, "only a is left");
            left += 1;
        }
        assert_eq!(left, SOURCE_QUEUE - 3);
        assert!(inbox.is_empty() && inbox.queues.is_empty() && inbox.turn.is_empty(), "nothing remembered");
    }

    #[test]
    fn the_inbox_is_bounded_across_sources() {
        let mut inbox = Inbox::default();
        let mut accepted = 0;
        for n in 0..(QUEUED / SOURCE_QUEUE + 2) * SOURCE_QUEUE {
            let src = from([10, 1, (n / SOURCE_QUEUE) as u8, 1], 53);
            accepted += usize::from(inbox.push(src, b"q"));
        }
        assert_eq!(accepted, QUEUED);
    }

    #[test]
    fn waiting_answers_are_bounded_per_source_and_given_back() {
        let waiting = Arc::new(Waiting::default());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let permits: Vec<_> = (0..WAITING_PER_SOURCE).map(|_| waiting.admit(ip).expect("room")).collect();
        assert!(waiting.admit(ip).is_none(), "the source is at its bound");
        let other = waiting.admit([10, 0, 0, 2].into()).expect("another source has room");
        drop(permits);
        drop(other);
        assert!(waiting.admit(ip).is_some(), "given back");
        assert_eq!(waiting.waiting.lock().unwrap().1, 0, "every permit returned (the last was dropped too)");
    }

    #[test]
    fn hickory_answers_nobody_at_port_0_or_a_broadcast_address() {
        assert!(answerable(from([10, 0, 0, 1], 53)));
        assert!(!answerable(from([10, 0, 0, 1], 0)));
        assert!(!answerable(from([0, 0, 0, 0], 53)));
        assert!(!answerable(from([255, 255, 255, 255], 53)));
    }
}
