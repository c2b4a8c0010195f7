//! One request through the proxy: the route from the current table, a backend, the headers
//! rewritten, the request sent over the pooled client, the answer (or an error page) back.
//!
//! ```text
//! request ─▶ table.load() ─▶ lookup(host, path) ── none: 404 · no instance: 503
//!              │ route.pick() ─▶ rewrite headers ─▶ client.request ── connect error, idempotent
//!              │                                     │               and no body: next instance
//!              │                                     ├─ no head within the timeout: 504
//!              ▼                                     └─ other error: 502 (413 over the body limit)
//!           response: hop-by-hop headers stripped (101: both sides upgraded, bytes copied)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::ProxyOptions;
use super::table::{Backend, Lookup, Route, Table};

/// What the proxy sends upstream: the client's body (bounded), or nothing (a replayable request).
pub type UpstreamBody = Either<Limited<Incoming>, Empty<Bytes>>;
/// What the proxy answers: the backend's body, or its own page.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// At most this many instances are tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// The state every request shares: the table, the upstream client, the limits.
pub struct Forwarder {
    table: Arc<ArcSwap<Table>>,
    client: Client<HttpConnector, UpstreamBody>,
    opts: ProxyOptions,
    id_prefix: u64,
    ids: AtomicU64,
}

impl Forwarder {
    /// A forwarder reading `table` on every request.
    pub fn new(table: Arc<ArcSwap<Table>>, opts: ProxyOptions) -> Forwarder {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(opts.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .build(connector);
        let id_prefix = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        };
        Forwarder { table, client, opts, id_prefix, ids: AtomicU64::new(0) }
    }

    /// Its timeouts and limits.
    pub fn options(&self) -> &ProxyOptions {
        &self.opts
    }

    /// Answers one request from `peer`; never fails (errors are pages).
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let host = match req.uri().authority().map(|a| a.as_str()).or_else(|| host_header(req.headers())) {
            Some(h) => h.to_string(),
            None => return page(StatusCode::BAD_REQUEST, "the request names no host (no Host header)\n".into()),
        };
        let table = self.table.load();
        if !table.ready {
            return page(StatusCode::SERVICE_UNAVAILABLE, "the router has not read the catalog yet\n".into());
        }
        let route = match table.lookup(&host, req.uri().path()) {
            Lookup::Route(r) => r.clone(),
            Lookup::UnknownHost => {
                return page(StatusCode::NOT_FOUND, format!("no Shoal service routes the host {host:?}\n"));
            }
            Lookup::UnknownPath => {
                let path = req.uri().path();
                return page(StatusCode::NOT_FOUND, format!("no Shoal service routes {path:?} on the host {host:?}\n"));
            }
        };
        drop(table);
        let Some(first) = route.pick() else {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the service {:?} has no passing instance\n", route.service),
            );
        };
        if let Some(len) = content_length(req.headers())
            && len > self.opts.max_body_bytes
        {
            return too_large(self.opts.max_body_bytes);
        }
        let upgrade = wants_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        self.rewrite_request(&mut parts, &host, peer, upgrade);
        // A request without a body to replay, and safe to repeat, may go to another instance
        // after a failed connect.
        let replayable = body.is_end_stream() && is_idempotent(&parts.method) && !upgrade;
        let mut body = if replayable { None } else { Some(Limited::new(body, self.opts.max_body_bytes as usize)) };
        let attempts = if replayable { route.backends.len().min(MAX_ATTEMPTS) } else { 1 };
        let mut last = None;
        for k in 0..attempts {
            let backend = &route.backends[(first + k) % route.backends.len()];
            let up_body = match body.take() {
                Some(b) => Either::Left(b),
                None => Either::Right(Empty::new()),
            };
            let req = build_request(&mut parts, backend, &route, up_body, k + 1 < attempts);
            let _in_flight = backend.start();
            let sent = tokio::time::timeout(self.opts.response_timeout, self.client.request(req)).await;
            match sent {
                Ok(Ok(mut resp)) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_side) = client_upgrade {
                            let upstream = hyper::upgrade::on(&mut resp);
                            tokio::spawn(tunnel(client_side, upstream, self.opts.tunnel_idle_timeout));
                        }
                    } else {
                        strip_hop_by_hop(resp.headers_mut());
                    }
                    return resp.map(Either::Left);
                }
                Ok(Err(e)) if e.is_connect() => {
                    tracing::debug!(service = %route.service, backend = %backend.endpoint, error = %chain(&e), "connect failed");
                    last = Some(format!("cannot connect to {}: {}", backend.endpoint, chain(&e)));
                }
                Ok(Err(e)) => {
                    if is_body_limit(&e) {
                        return too_large(self.opts.max_body_bytes);
                    }
                    let msg =
                        format!("the service {:?} at {} failed: {}\n", route.service, backend.endpoint, chain(&e));
                    return page(StatusCode::BAD_GATEWAY, msg);
                }
                Err(_) => {
                    let msg = format!(
                        "the service {:?} at {} did not answer within {:?}\n",
                        route.service, backend.endpoint, self.opts.response_timeout
                    );
                    return page(StatusCode::GATEWAY_TIMEOUT, msg);
                }
            }
        }
        let why = last.unwrap_or_default();
        page(StatusCode::BAD_GATEWAY, format!("the service {:?}: {why}\n", route.service))
    }

    /// The headers a backend sees: hop-by-hop ones gone, the `X-Forwarded-*` set, a request ID.
    fn rewrite_request(&self, parts: &mut http::request::Parts, host: &str, peer: SocketAddr, upgrade: bool) {
        let h = &mut parts.headers;
        let up = upgrade.then(|| h.get(header::UPGRADE).cloned()).flatten();
        strip_hop_by_hop(h);
        if let Some(up) = up {
            h.insert(header::UPGRADE, up);
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if !h.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(host)
        {
            // HTTP/2 clients name the host in :authority; the backend speaks HTTP/1.1.
            h.insert(header::HOST, v);
        }
        let ip = peer.ip().to_canonical().to_string();
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        if !h.contains_key(&X_REQUEST_ID) {
            let n = self.ids.fetch_add(1, Ordering::Relaxed);
            let id = format!("{:016x}{n:08x}", self.id_prefix);
            h.insert(X_REQUEST_ID.clone(), HeaderValue::from_str(&id).expect("hex is a valid header value"));
        }
        parts.version = Version::HTTP_11;
    }
}

/// The upstream request for one attempt (the headers cloned only when another attempt may follow).
fn build_request(
    parts: &mut http::request::Parts,
    backend: &Backend,
    route: &Route,
    body: UpstreamBody,
    keep: bool,
) -> Request<UpstreamBody> {
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (path, query) = match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    };
    let path = route.upstream_path(if path.is_empty() { "/" } else { path });
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(backend.authority.clone())
        .path_and_query(pq)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    // Copied only while another attempt may need them; the last attempt takes them.
    *req.headers_mut() = if keep { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
    req
}

/// Copies bytes both ways once both sides have switched protocols, until either closes or the
/// tunnel is idle for `idle`.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, idle: Duration) {
    let (c, u) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(client = ?c.err(), upstream = ?u.err(), "upgrade failed");
            return;
        }
    };
    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
    // An overall bound for now: a tunnel lives at most `idle` without finishing.
    let _ = tokio::time::timeout(idle, tokio::io::copy_bidirectional(&mut c, &mut u)).await;
}

fn host_header(h: &HeaderMap) -> Option<&str> {
    h.get(header::HOST).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Removes `Connection`, the headers it names, and the other hop-by-hop headers (RFC 9110 §7.6.1).
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
        h.remove(header::CONNECTION);
    }
    for n in
        [&KEEP_ALIVE, &PROXY_CONNECTION, &header::TE, &header::TRAILER, &header::TRANSFER_ENCODING, &header::UPGRADE]
    {
        if h.contains_key(n) {
            h.remove(n);
        }
    }
}

/// Whether the error came from the client's body going over the limit.
fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The error and its causes, on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

fn too_large(limit: u64) -> Response<ProxyBody> {
    page(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is over the limit of {limit} bytes\n"))
}

/// The proxy's own answer: a short plain-text page saying what happened.
pub fn page(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(HeaderName::from_static("x-shoal-router"), HeaderValue::from_static("error"));
    r
}
