//! Helpers of the built-in proxy's tests: views built by hand, small hyper backends on loopback
//! (127.0.33.0/24 only), the proxy started in-process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use shoal_router::proxy::{ProxyOptions, Table};
use shoal_router::view::{InstanceView, View};
use tokio::net::TcpListener;

/// One service of a hand-made view: name, labels, endpoints (`addr:port`) of passing instances.
pub struct Svc<'a> {
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub endpoints: Vec<SocketAddr>,
}

/// A view of `services` at `index` (every instance passing).
pub fn view(index: u64, services: &[Svc<'_>]) -> View {
    let mut v = View { index, domain: "shoal".into(), ..View::default() };
    for s in services {
        let labels: BTreeMap<String, String> = s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let instances = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(k, e)| InstanceView {
                service: s.name.into(),
                id: format!("{}.{k}", s.name),
                node: "n1".into(),
                address: e.ip().to_string(),
                port: e.port(),
                tags: vec![],
                meta: BTreeMap::new(),
                status: "passing",
                labels: labels.clone(),
                weight: 1,
            })
            .collect();
        v.instances.insert(s.name.into(), instances);
        v.labels.insert(s.name.into(), labels);
    }
    v
}

/// Swaps the table of `view` into `table` (sharing backends with the current one).
pub fn install(table: &ArcSwap<Table>, view: &View) {
    let next = Table::build(view, &table.load());
    table.store(Arc::new(next));
}

/// A backend: answers every request with 200, its `name` as the body, and what it saw in
/// `x-seen-*` headers (path, Host, X-Forwarded-*, X-Request-Id, and whether hop-by-hop
/// headers reached it). `Upgrade: echo` switches protocols and echoes bytes.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn backend(ip: &str, name: &'static str) -> Backend {
    let listener = TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::Relaxed);
                    answer(name, req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend { addr, hits, task }
}

async fn answer(name: &'static str, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
        r.headers_mut().insert("connection", "upgrade".parse().unwrap());
        return Ok(r);
    }
    let mut seen = vec![("x-seen-path", req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default())];
    for h in ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"] {
        let v = req.headers().get(h).map(|v| v.to_str().unwrap_or("?").to_string()).unwrap_or_default();
        seen.push((h, v));
    }
    let hop = ["keep-alive", "x-hop", "proxy-connection", "te"].iter().any(|h| req.headers().contains_key(*h));
    let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let mut r = Response::new(Full::new(Bytes::from(name)));
    for (k, v) in seen {
        let key = if k.starts_with("x-seen") { k.to_string() } else { format!("x-seen-{k}") };
        r.headers_mut().insert(hyper::header::HeaderName::from_bytes(key.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r.headers_mut().insert("x-seen-hop-by-hop", if hop { "yes" } else { "no" }.parse().unwrap());
    r.headers_mut().insert("x-seen-body-bytes", body.to_string().parse().unwrap());
    r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(r)
}

/// The proxy, serving until dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub table: Arc<ArcSwap<Table>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn proxy(opts: ProxyOptions) -> Proxy {
    let listener = TcpListener::bind("127.0.33.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let table = shoal_router::proxy::empty_table();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(shoal_router::proxy::serve(listener, table.clone(), opts, async move {
        let _ = rx.await;
    }));
    Proxy { addr, table, stop: Some(tx) }
}

/// The address clients connect from (so the proxy's `X-Forwarded-For` can be checked).
pub const CLIENT_IP: &str = "127.0.33.2";

/// One kept-alive HTTP/1.1 client connection to `addr`, from [`CLIENT_IP`].
pub async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{CLIENT_IP}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

/// A GET of `path` with `Host: host` (and extra headers), answered as (status, headers, body).
pub async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, String) {
    let mut b = Request::get(path).header("host", host);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).unwrap();
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}
