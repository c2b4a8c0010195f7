//! The built-in proxy end to end, in-process: real hyper backends on loopback (127.0.33.0/24),
//! the proxy's listener, HTTP/1.1 and h2c clients. Routing and header rewriting, the error
//! pages, retries, upgrades, and bad input (each answered, and the proxy serves others after).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Svc, backend, connect, get, install, proxy, view};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use shoal_router::proxy::ProxyOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn opts() -> ProxyOptions {
    ProxyOptions {
        header_timeout: Duration::from_millis(800),
        response_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        max_header_bytes: 16 * 1024,
        max_body_bytes: 1024,
        ..ProxyOptions::default()
    }
}

#[tokio::test]
async fn routes_by_host_and_path_round_robin_with_forwarded_headers() {
    let (a, b, c) =
        (backend("127.0.33.11", "a").await, backend("127.0.33.12", "b").await, backend("127.0.33.13", "c").await);
    let api = backend("127.0.33.14", "api").await;
    let p = proxy(opts()).await;
    let mut conn = connect(p.addr).await;
    let (s, h, body) = get(&mut conn, "web.shoal", "/", &[]).await;
    assert_eq!((s, h.get("x-shoal-router").is_some()), (503, true), "before the first table: {body}");
    assert!(body.contains("not read the catalog"), "{body}");

    install(
        &p.table,
        &view(
            2,
            &[
                Svc { name: "web", labels: &[], endpoints: vec![a.addr, b.addr, c.addr] },
                Svc {
                    name: "api",
                    labels: &[
                        ("shoal.http.host", "web.shoal"),
                        ("shoal.http.path", "/api"),
                        ("shoal.http.strip", "true"),
                    ],
                    endpoints: vec![api.addr],
                },
                Svc { name: "empty", labels: &[], endpoints: vec![] },
            ],
        ),
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (s, _, body) = get(&mut conn, "web.shoal", "/", &[]).await;
        assert_eq!(s, 200);
        seen.push(body);
    }
    assert_eq!(seen, ["a", "b", "c", "a", "b", "c"], "round-robin over the three instances");

    // Headers as the backend saw them.
    let (s, h, body) = get(
        &mut conn,
        "web.shoal:8080",
        "/api/users?q=1",
        &[("x-forwarded-for", "203.0.113.7"), ("x-request-id", "abc-1"), ("connection", "x-hop"), ("x-hop", "1")],
    )
    .await;
    let seen = |k: &str| h.get(format!("x-seen-{k}")).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!((s, body.as_str()), (200, "api"));
    assert_eq!(seen("path"), "/users?q=1", "the /api prefix stripped, the query kept");
    assert_eq!(seen("host"), "web.shoal:8080", "Host passed unchanged");
    assert_eq!(seen("x-forwarded-for"), "203.0.113.7, 127.0.33.2", "the client's address appended");
    assert_eq!(seen("x-forwarded-proto"), "http");
    assert_eq!(seen("x-forwarded-host"), "web.shoal:8080");
    assert_eq!(seen("x-request-id"), "abc-1", "a request ID is kept");
    assert_eq!(seen("hop-by-hop"), "no", "Connection and the headers it names are stripped");
    assert!(h.get("keep-alive").is_none(), "hop-by-hop headers of the answer are stripped");

    let (_, h, _) = get(&mut conn, "web.shoal", "/", &[]).await;
    let id = h.get("x-seen-x-request-id").unwrap().to_str().unwrap().to_string();
    assert_eq!(id.len(), 24, "a request ID is added: {id}");
    assert_eq!(h.get("x-seen-x-forwarded-for").unwrap(), common::CLIENT_IP);

    // Error pages.
    let (s, _, body) = get(&mut conn, "nope.shoal", "/", &[]).await;
    assert_eq!(s, 404, "{body}");
    assert!(body.contains("nope.shoal"), "the 404 names the host: {body}");
    let (s, _, body) = get(&mut conn, "empty.shoal", "/", &[]).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("no passing instance") && body.contains("empty"), "{body}");
}

#[tokio::test]
async fn a_failed_connect_is_retried_on_another_instance_for_idempotent_requests() {
    let live = backend("127.0.33.21", "live").await;
    // A port nothing listens on: connects are refused.
    let dead = TcpListener::bind("127.0.33.22:0").await.unwrap().local_addr().unwrap();
    let p = proxy(opts()).await;
    install(&p.table, &view(2, &[Svc { name: "web", labels: &[], endpoints: vec![dead, live.addr] }]));
    let mut conn = connect(p.addr).await;
    for k in 0..6 {
        let (s, _, body) = get(&mut conn, "web.shoal", "/", &[]).await;
        assert_eq!((s, body.as_str()), (200, "live"), "GET {k}");
    }
    // A POST with a body is not repeated: the turn that lands on the dead instance is a 502.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let req = hyper::Request::post("/").header("host", "web.shoal").body(Full::new(Bytes::from("x=1"))).unwrap();
        conn.ready().await.unwrap();
        let resp = conn.send_request(req).await.unwrap();
        let s = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if s == 502 {
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains("cannot connect") && body.contains(&dead.to_string()), "{body}");
        }
        statuses.push(s);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502], "one POST per instance");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let a = backend("127.0.33.23", "a").await;
    let p = proxy(opts()).await;
    install(&p.table, &view(2, &[Svc { name: "web", labels: &[], endpoints: vec![a.addr] }]));
    // Declared too long: refused before anything is sent.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: web.shoal\r\nContent-Length: 5000\r\n\r\n").await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 413"), "declared length");
    // Chunked, going over on the way.
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut conn, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(c);
    let req = hyper::Request::post("/").header("host", "web.shoal").body(futures_chunks(3000)).unwrap();
    let resp = conn.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413, "streamed length");
    // Under the limit: forwarded whole.
    let mut conn = connect(p.addr).await;
    let req =
        hyper::Request::post("/").header("host", "web.shoal").body(Full::new(Bytes::from(vec![b'x'; 900]))).unwrap();
    let resp = conn.send_request(req).await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["x-seen-body-bytes"].to_str().unwrap()), (200, "900"));
}

/// A body of `n` bytes in 100-byte chunks, with no declared length.
fn futures_chunks(n: usize) -> http_body_util::StreamBody<chunked::Chunks> {
    http_body_util::StreamBody::new(chunked::Chunks(n))
}

mod chunked {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;

    pub struct Chunks(pub usize);

    impl futures::Stream for Chunks {
        type Item = Result<Frame<Bytes>, std::io::Error>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            if self.0 == 0 {
                return Poll::Ready(None);
            }
            let k = self.0.min(100);
            self.0 -= k;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'y'; k])))))
        }
    }
}

#[tokio::test]
async fn h2c_and_upgrades_pass_through() {
    let a = backend("127.0.33.24", "a").await;
    let p = proxy(opts()).await;
    install(&p.table, &view(2, &[Svc { name: "web", labels: &[], endpoints: vec![a.addr] }]));
    // HTTP/2 with prior knowledge: the host comes from :authority, the backend gets Host.
    let stream = TcpStream::connect(p.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let req = hyper::Request::get("http://web.shoal/h2").body(Full::new(Bytes::new())).unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-seen-host"], "web.shoal");
    }
    // An upgrade: 101 back, then bytes both ways.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: web.shoal\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: echo"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut buf = [0u8; 23];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping through the tunnel");
}

/// Reads up to the end of a response head (or EOF), as text.
async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !out.ends_with(b"\r\n\r\n") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(1)) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the proxy still answers a normal request on a new connection.
async fn still_serves(p: &common::Proxy, case: &str) {
    let mut conn = connect(p.addr).await;
    let (s, _, body) = get(&mut conn, "good.shoal", "/", &[]).await;
    assert_eq!((s, body.as_str()), (200, "good"), "after {case}");
}

#[tokio::test]
async fn bad_backends_and_bad_clients_are_answered_and_the_proxy_keeps_serving() {
    let good = backend("127.0.33.31", "good").await;
    // Accepts, then resets every connection (SO_LINGER 0).
    let resetter = TcpListener::bind("127.0.33.32:0").await.unwrap();
    let reset_addr = resetter.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = resetter.accept().await {
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    // Accepts and reads, never answers.
    let silent = TcpListener::bind("127.0.33.33:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = silent.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    let p = proxy(opts()).await;
    install(
        &p.table,
        &view(
            2,
            &[
                Svc { name: "good", labels: &[], endpoints: vec![good.addr] },
                Svc { name: "reset", labels: &[], endpoints: vec![reset_addr] },
                Svc { name: "silent", labels: &[], endpoints: vec![silent_addr] },
            ],
        ),
    );
    let mut conn = connect(p.addr).await;
    let (s, _, body) = get(&mut conn, "reset.shoal", "/", &[]).await;
    assert_eq!(s, 502, "a backend that resets: {body}");
    assert!(body.contains("reset") && body.contains(&reset_addr.to_string()), "the 502 says why: {body}");
    still_serves(&p, "a resetting backend").await;

    let t = Instant::now();
    let (s, _, body) = get(&mut conn, "silent.shoal", "/", &[]).await;
    let took = t.elapsed();
    assert_eq!(s, 504, "a backend that never answers: {body}");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "504 after the timeout: {took:?}");
    assert!(body.contains("did not answer"), "{body}");
    still_serves(&p, "a silent backend").await;

    // An oversized head: 431.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let big = format!("GET / HTTP/1.1\r\nHost: good.shoal\r\nX-Big: {}\r\n\r\n", "x".repeat(64 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 431"), "oversized header: {head:?}");
    still_serves(&p, "an oversized header").await;

    // A malformed request line: 400, or the connection closed.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GARBAGE / NOT-HTTP\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.is_empty() || head.starts_with("HTTP/1.1 400"), "malformed request line: {head:?}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is closed after a malformed request");
    still_serves(&p, "a malformed request line").await;

    // Slowloris: a header byte every 100 ms never finishes the head; closed after the timeout.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: good.shoal\r\n").await.unwrap();
    let t = Instant::now();
    let mut closed_after = None;
    for _ in 0..50 {
        if s.write_all(b"X").await.is_err() {
            closed_after = Some(t.elapsed());
            break;
        }
        let mut b = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(t.elapsed());
                break;
            }
            Ok(Ok(_)) => {} // a 408, say; the close follows
            Err(_) => {}
        }
    }
    let after = closed_after.expect("a slowloris client is closed");
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_secs(3),
        "closed after the header timeout: {after:?}"
    );
    still_serves(&p, "a slowloris client").await;
}

/// A catalog of `web` with the given instances (all passing), at `index`.
fn snapshot(index: u64, endpoints: &[std::net::SocketAddr]) -> shoal_api::edge::EdgeSnapshot {
    let instances: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(k, e)| {
            serde_json::json!({"id": format!("web.{k}"), "node": "n1", "address": e.ip().to_string(), "own_address": true,
                   "port": e.port(), "tags": [], "meta": {}, "health": "passing", "weights": {"passing": 1, "warning": 1}})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "index": index,
        "catalog": {"index": index, "services": {"web": instances}, "service_indexes": {}, "nodes": {}},
        "service_labels": {}
    }))
    .unwrap()
}

/// A source whose catalog the test sets; blocking reads wait for a new index, as the API's do.
struct Scripted(tokio::sync::watch::Sender<shoal_api::edge::EdgeSnapshot>);

#[async_trait::async_trait]
impl shoal_router::source::Source for Scripted {
    async fn snapshot(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<shoal_api::edge::EdgeSnapshot, shoal_router::source::SourceError> {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.index != index)).await;
        Ok(rx.borrow().clone())
    }
    async fn kv_index(&self, _: u64, _: Duration) -> Result<u64, shoal_router::source::SourceError> {
        Ok(0)
    }
    async fn kv_get(&self, _: &str) -> Result<Option<String>, shoal_router::source::SourceError> {
        Ok(None)
    }
    async fn kv_tree(&self, _: &str) -> Result<Vec<(String, String)>, shoal_router::source::SourceError> {
        Ok(vec![])
    }
}

#[tokio::test]
async fn the_feeder_follows_the_catalog_with_one_blocking_watch() {
    let (a, b) = (backend("127.0.33.51", "a").await, backend("127.0.33.52", "b").await);
    let p = proxy(opts()).await;
    let source = std::sync::Arc::new(Scripted(tokio::sync::watch::channel(snapshot(5, &[a.addr])).0));
    let feeder = tokio::spawn(shoal_router::proxy::follow(source.clone(), "shoal".into(), p.table.clone()));
    let mut conn = connect(p.addr).await;
    // (case, catalog index, instances, bodies expected over 4 requests)
    let cases: [(&str, u64, Vec<std::net::SocketAddr>, &[&str]); 4] = [
        ("first read", 5, vec![a.addr], &["a", "a", "a", "a"]),
        ("an instance joins", 6, vec![a.addr, b.addr], &["a", "b"]),
        ("an instance leaves", 7, vec![b.addr], &["b", "b", "b", "b"]),
        ("every instance leaves", 8, vec![], &[]),
    ];
    for (case, index, eps, want) in cases {
        source.0.send_replace(snapshot(index, &eps));
        let t = Instant::now();
        while p.table.load().index != index {
            assert!(t.elapsed() < Duration::from_secs(2), "case {case:?}: the table did not follow");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut got = std::collections::BTreeSet::new();
        let mut statuses = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let (s, _, body) = get(&mut conn, "web.shoal", "/", &[]).await;
            statuses.insert(s);
            if s == 200 {
                got.insert(body);
            }
        }
        let want: std::collections::BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "case {case:?}");
        let want_status = if eps.is_empty() { 503 } else { 200 };
        assert_eq!(statuses, [want_status].into(), "case {case:?}");
    }
    feeder.abort();
}
