//! The hickory side: a [`RequestHandler`] that answers names under the domains with
//! [`answer()`] from the current [`SnapshotHandle`], forwards other names to the recursor if one is
//! configured (hickory's own forwarder), and refuses them otherwise; and [`DnsServer`], which binds
//! it on one UDP and one TCP socket of the same port (UDP read by [`crate::udp`], TCP by hickory's
//! server).
//!
//! Malformed packets never reach the handler: what has no header is dropped and what does not
//! parse gets FORMERR, with hickory's parser (on TCP in hickory's server, on UDP in the reader's
//! `udp::reply`). The handler answers FORMERR to a question count other than one or to a question
//! not in plain form (without echoing the questions: see `one_plain_question`), NOTIMP to other
//! opcodes and zone transfers, BADVERS to EDNS versions above 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::Query;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::resolver::config::{NameServerConfig, ResolverOpts};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, MessageResponse, MessageResponseBuilder, Queries};
use hickory_server::{Server, proto::rr::Record};
use shoal_model::catalog::snapshot::Snapshot;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::answer::{DnsConfig, answer};
use crate::cache::AnswerCache;

/// How long the recursor has to answer before the client gets SERVFAIL (Consul's
/// `recursor_timeout`).
pub const RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP connection that sends no query for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The bytes an OPT record without options takes; reserved from the client's EDNS buffer.
const OPT_RECORD_LEN: usize = 11;

/// Why the DNS server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The UDP or TCP socket could not be bound.
    #[error("cannot bind the DNS server on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The forwarder to the recursor could not be built.
    #[error("cannot forward to the recursor {addr}: {reason}")]
    Recursor {
        /// The recursor.
        addr: SocketAddr,
        /// hickory's reason.
        reason: String,
    },
    /// A listener failed while serving.
    #[error("the DNS server stopped: {0}")]
    Serve(String),
}

impl DnsError {
    /// Whether the port is taken (another DNS server, or a previous run not gone yet): the caller
    /// may pick another port or retry later.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, DnsError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// The catalog snapshot the server answers from, swapped whole when a newer one arrives. Cheap to
/// clone (all clones share one copy) and to read: a query takes an `Arc` and never waits for the
/// feed, which builds the next snapshot outside the lock.
#[derive(Debug, Clone)]
pub struct SnapshotHandle {
    current: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Default for SnapshotHandle {
    fn default() -> Self {
        SnapshotHandle::new(Snapshot::default())
    }
}

impl SnapshotHandle {
    /// A handle holding `snap`.
    pub fn new(snap: Snapshot) -> SnapshotHandle {
        SnapshotHandle { current: Arc::new(watch::Sender::new(Arc::new(snap))) }
    }

    /// The snapshot now.
    pub fn get(&self) -> Arc<Snapshot> {
        self.current.borrow().clone()
    }

    /// Replaces the snapshot; queries already running keep the one they took.
    pub fn set(&self, snap: impl Into<Arc<Snapshot>>) {
        self.current.send_replace(snap.into());
    }

    /// The index of the snapshot now.
    pub fn index(&self) -> u64 {
        self.current.borrow().index
    }

    /// Notified on every [`SnapshotHandle::set`] (readiness checks, tests).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.current.subscribe()
    }
}

/// Answers DNS requests from a [`SnapshotHandle`].
pub struct DnsHandler {
    catalog: SnapshotHandle,
    cfg: DnsConfig,
    /// hickory's catalog with one forwarding zone at the root: names outside the domains.
    forwarder: Option<Catalog>,
    /// Encoded UDP answers of the current snapshot (see [`crate::cache`]).
    cache: AnswerCache,
}

impl DnsHandler {
    /// A handler answering `cfg`'s domains from `catalog`, forwarding other names to `recursor`
    /// (UDP, then TCP if truncated; [`RECURSOR_TIMEOUT`], one attempt; SERVFAIL when it fails).
    pub fn new(catalog: SnapshotHandle, cfg: DnsConfig, recursor: Option<SocketAddr>) -> Result<DnsHandler, DnsError> {
        let forwarder = recursor.map(forwarder).transpose()?;
        Ok(DnsHandler { catalog, cfg, forwarder, cache: AnswerCache::default() })
    }
}

fn forwarder(addr: SocketAddr) -> Result<Catalog, DnsError> {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    let mut options = ResolverOpts::default();
    options.timeout = RECURSOR_TIMEOUT;
    options.attempts = 1;
    let config = ForwardConfig { name_servers: vec![ns], options: Some(options) };
    let zone =
        ForwardZoneHandler::builder_tokio(config).build().map_err(|reason| DnsError::Recursor { addr, reason })?;
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(zone)]);
    Ok(catalog)
}

/// Where a request goes, by the checks every path shares (hickory's TCP server, the UDP readers,
/// the answer cache): the cache keeps only what [`answer()`] answers, so it must agree with the
/// handler on exactly which requests those are.
pub(crate) enum Route<'r> {
    /// A reply with no records and this code; `echo`: with the client's question (else none).
    Code {
        /// The response code.
        code: ResponseCode,
        /// Whether the question is echoed.
        echo: bool,
    },
    /// Outside the domains, to the recursor.
    Forward,
    /// Under the domains: [`answer()`] decides, within `udp_limit` (`None`: TCP).
    Answer {
        /// The one question, as the client spelled it.
        query: &'r Query,
        /// The UDP budget without the OPT record.
        udp_limit: Option<usize>,
    },
}

impl DnsHandler {
    /// Where `request` goes (see [`Route`]).
    pub(crate) fn route<'r>(&self, request: &'r Request) -> Route<'r> {
        let code = |code, echo| Route::Code { code, echo };
        if !one_plain_question(&request.queries) {
            return code(ResponseCode::FormErr, false);
        }
        if request.edns.as_ref().is_some_and(|q| q.version() > 0) {
            return code(ResponseCode::BADVERS, true);
        }
        if request.metadata.message_type != MessageType::Query {
            return code(ResponseCode::FormErr, true);
        }
        if request.metadata.op_code != OpCode::Query {
            return code(ResponseCode::NotImp, true);
        }
        let Ok(info) = request.request_info() else {
            return code(ResponseCode::FormErr, true);
        };
        let query = info.query.original();
        if self.cfg.zone_of(query.name()).is_none() {
            return match &self.forwarder {
                Some(_) => Route::Forward,
                None => code(ResponseCode::Refused, true),
            };
        }
        let udp_limit = (request.protocol() == Protocol::Udp).then(|| match &request.edns {
            Some(q) => (q.max_payload().max(512) as usize).saturating_sub(OPT_RECORD_LEN),
            None => crate::answer::CLASSIC_UDP_SIZE,
        });
        Route::Answer { query, udp_limit }
    }

    /// The snapshot answered from now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.catalog.get()
    }

    /// The answer cache of the UDP readers.
    pub(crate) fn cache(&self) -> &AnswerCache {
        &self.cache
    }

    /// Answers `request` from `snap`, shuffling with `seed`: what [`RequestHandler::handle_request`]
    /// does with the current snapshot and a random seed, and what the answer cache runs to fill an
    /// entry (with the snapshot the entry belongs to).
    pub(crate) async fn respond<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
        snap: &Snapshot,
        seed: u64,
    ) -> ResponseInfo {
        // The response carries EDNS when the query did, echoing the client's buffer size.
        let edns = request.edns.as_ref().map(|q| {
            let mut e = Edns::new();
            e.set_max_payload(q.max_payload().max(512)).set_version(0);
            e
        });
        let (query, udp_limit) = match self.route(request) {
            Route::Code { code, echo: false } => {
                let none = no_questions();
                return send_code(request, &none, code, edns.as_ref(), response_handle).await;
            }
            Route::Code { code, echo: true } => {
                return send_code(request, &request.queries, code, edns.as_ref(), response_handle).await;
            }
            Route::Forward => {
                let fwd = self.forwarder.as_ref().expect("forwarded only with a recursor");
                return fwd.handle_request::<R, T>(request, response_handle).await;
            }
            Route::Answer { query, udp_limit } => (query, udp_limit),
        };
        let ans = answer(snap, &self.cfg, query, udp_limit, seed);
        debug!(name = %query.name(), qtype = %query.query_type(), code = %ans.code, answers = ans.answers.len(), truncated = ans.truncated, "dns answer");

        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = ans.authoritative;
        meta.response_code = ans.code;
        meta.truncation = ans.truncated;
        meta.recursion_available = self.forwarder.is_some();
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response =
            builder.build(meta, ans.answers.iter(), ans.authority.iter(), std::iter::empty(), ans.additionals.iter());
        send(request, response_handle, response).await
    }
}

#[async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response_handle: R) -> ResponseInfo {
        let snap = self.catalog.get();
        self.respond::<R, T>(request, response_handle, &snap, rand::random()).await
    }
}

/// Whether the request has one question, in plain form: its bytes are exactly the encoding of
/// the question read from them.
///
/// hickory sends the client's question bytes back as they came. In a request's only question a
/// compression pointer can only point into the header (nothing else comes before it), and echoed
/// it points into the reply's header, whose flags differ: the client would get a reply that does
/// not parse (found by the fuzz target's seeds). No resolver compresses its question. Such a
/// request, and one with no or several questions (which one request may not carry, and which
/// could hide the same pointer), is answered FORMERR without its questions, as hickory answers
/// a request it cannot read at all.
pub(crate) fn one_plain_question(queries: &Queries) -> bool {
    let [q] = queries.queries() else { return false };
    let raw = queries.as_bytes();
    let mut plain = Vec::with_capacity(raw.len());
    q.original().emit(&mut BinEncoder::new(&mut plain)).is_ok() && plain == raw
}

/// An empty question section, for replies that must not echo the client's.
pub(crate) fn no_questions() -> Queries {
    Queries::read(&mut BinDecoder::new(&[]), 0).expect("reading zero questions reads nothing")
}

/// A response with no records and `code` (extended codes go into the OPT record), echoing the
/// questions `queries`.
async fn send_code<R: ResponseHandler>(
    request: &Request,
    queries: &Queries,
    code: ResponseCode,
    edns: Option<&Edns>,
    response_handle: R,
) -> ResponseInfo {
    let mut edns = edns.cloned();
    if let Some(e) = edns.as_mut()
        && code.high() != 0
    {
        e.set_rcode_high(code.high());
    }
    let mut builder = MessageResponseBuilder::new(queries, None);
    if let Some(e) = &edns {
        builder.edns(e);
    }
    let response = builder.error_msg(&request.metadata, code);
    send(request, response_handle, response).await
}

async fn send<'a, R: ResponseHandler>(
    request: &Request,
    mut response_handle: R,
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, src = %request.src(), "failed to send a dns response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
        }
    }
}

/// A DNS server on one UDP and one TCP socket of the same port: UDP read by [`crate::udp`]'s
/// reader, which shares the server between sources; TCP by hickory's server (one task per
/// connection, its queries answered in order, idle connections closed after
/// [`TCP_IDLE_TIMEOUT`]).
pub struct DnsServer {
    tcp: Server<Shared>,
    udp: tokio::task::JoinHandle<Result<(), DnsError>>,
    stop_udp: watch::Sender<bool>,
    addr: SocketAddr,
}

/// The handler shared by the UDP reader and hickory's TCP server.
struct Shared(Arc<DnsHandler>);

#[async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, response_handle: R) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, response_handle).await
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: an ephemeral port free for both) and starts answering
    /// in the background of the current tokio runtime; [`DnsServer::run`] waits for it.
    pub async fn bind(
        addr: SocketAddr,
        catalog: SnapshotHandle,
        cfg: DnsConfig,
        recursor: Option<SocketAddr>,
    ) -> Result<DnsServer, DnsError> {
        let handler = Arc::new(DnsHandler::new(catalog, cfg, recursor)?);
        let (udp, tcp) = bind_pair(addr).await?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind { addr, source })?;
        let (stop_udp, stopped) = watch::channel(false);
        let readers = std::thread::available_parallelism().map_or(1, |n| n.get().min(crate::udp::MAX_READERS));
        let udp = tokio::spawn(crate::udp::serve_all(Arc::new(udp), handler.clone(), stopped, readers));
        let mut server = Server::new(Shared(handler));
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
        Ok(DnsServer { tcp: server, udp, stop_udp, addr })
    }

    /// The address bound (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes (then stops gracefully) or a listener fails.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<(), DnsError> {
        let joined = |r: Result<Result<(), DnsError>, tokio::task::JoinError>| {
            r.map_err(|e| DnsError::Serve(format!("the udp reader ended: {e}")))?
        };
        let tcp_err = |e: hickory_server::net::NetError| DnsError::Serve(e.to_string());
        let mut udp = self.udp;
        tokio::select! {
            r = self.tcp.block_until_done() => {
                let _ = self.stop_udp.send(true);
                let udp = joined(udp.await);
                r.map_err(tcp_err).and(udp)
            }
            r = &mut udp => {
                let tcp = self.tcp.shutdown_gracefully().await;
                joined(r).and(tcp.map_err(tcp_err))
            }
            () = shutdown => {
                let _ = self.stop_udp.send(true);
                let udp = joined(udp.await);
                self.tcp.shutdown_gracefully().await.map_err(tcp_err).and(udp)
            }
        }
    }

    /// Binds on `addr` and serves until a listener fails: what the `shoal` binary runs.
    pub async fn serve(
        addr: SocketAddr,
        catalog: SnapshotHandle,
        cfg: DnsConfig,
        recursor: Option<SocketAddr>,
    ) -> Result<(), DnsError> {
        let server = DnsServer::bind(addr, catalog, cfg, recursor).await?;
        tracing::info!(addr = %server.local_addr(), "dns server listening (udp and tcp)");
        server.run(std::future::pending()).await
    }
}

/// UDP and TCP on the same port; with port 0, tries ephemeral UDP ports until TCP gets the same.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let bind_err = |source| DnsError::Bind { addr, source };
    let mut attempts = if addr.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
        let bound = udp.local_addr().map_err(bind_err)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempts > 1 && e.kind() == std::io::ErrorKind::AddrInUse => attempts -= 1,
            Err(source) => return Err(DnsError::Bind { addr: bound, source }),
        }
    }
}
