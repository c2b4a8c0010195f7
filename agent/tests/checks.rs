//! The health-check runner against the in-memory catalog: real HTTP and TCP probes on 127.0.0.1,
//! TTL timers, exec checks through a fake runtime, write-on-change, and reaping with a clock the
//! test moves. Every wait is on a condition (a catalog change, a server hit) with a deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State as AxState;
use axum::http::{StatusCode, Uri};
use shoal_agent::checks::{Clock, ContainerExec, Timing, run_with};
use shoal_agent::{CatalogLink, MemoryCatalog};
use shoal_model::catalog::{
    CatalogCommand, CheckDef, CheckKind, CheckSpec, CheckUpdate, Health, InstanceSpec, Source, Weights,
};
use shoal_model::{Command, CommandResult, Resources, Role, State};
use shoal_registry::control::catalog::NodeCatalog;
use tokio::sync::watch;

const NODE: &str = "n1";
const INTERVAL_MS: u64 = 100;

// ---- the catalog ----

fn catalog(instances: Vec<(Source, InstanceSpec)>) -> MemoryCatalog {
    let mut s = State::default();
    s.apply(
        1,
        &Command::NodeUpsert {
            id: 1,
            name: NODE.into(),
            cluster_addr: "127.0.0.1:2377".into(),
            http_addr: "127.0.0.1:8500".into(),
            role: Role::Manager,
            resources: Resources::default(),
        },
    );
    let cat = MemoryCatalog::new(s, NODE);
    for (source, i) in instances {
        register(&cat, source, i);
    }
    cat
}

fn register(cat: &MemoryCatalog, source: Source, instance: InstanceSpec) {
    let r = cat.apply(&Command::Catalog(CatalogCommand::Register { node: NODE.into(), source, instance }));
    assert_eq!(r, CommandResult::Applied(true), "register");
}

fn inst(id: &str, container_id: Option<&str>, checks: Vec<CheckSpec>) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        name: "web".into(),
        tags: vec![],
        address: "127.0.0.1".into(),
        port: 8080,
        meta: BTreeMap::new(),
        weights: Weights::default(),
        enable_tag_override: false,
        task_id: None,
        container_id: container_id.map(Into::into),
        checks,
    }
}

fn check(id: &str, kind: CheckKind) -> CheckSpec {
    CheckSpec {
        id: id.into(),
        name: format!("check {id}"),
        notes: String::new(),
        def: CheckDef { kind, interval_ms: INTERVAL_MS, ..CheckDef::manual() },
        status: Health::Critical,
        output: String::new(),
    }
}

fn http(id: &str, url: String) -> CheckSpec {
    check(id, CheckKind::Http { url, method: String::new(), headers: BTreeMap::new(), tls_skip_verify: false })
}

fn ttl(id: &str, ttl_ms: u64) -> CheckSpec {
    CheckSpec {
        def: CheckDef { kind: CheckKind::Ttl { ttl_ms }, ..CheckDef::manual() },
        ..check(id, CheckKind::Manual)
    }
}

fn status_of(s: &State, check_id: &str) -> Option<(Health, String)> {
    s.catalog.check(NODE, check_id).map(|c| (c.status, c.output.to_string()))
}

/// Waits (on catalog changes, at most 10 s) until `f` holds.
async fn wait_for(cat: &MemoryCatalog, what: &str, f: impl Fn(&State) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut index = 0;
    loop {
        if cat.read(&f) {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            let view = cat.read(|s| format!("{:#?}", s.catalog.node_instances(NODE).collect::<Vec<_>>()));
            panic!("timed out waiting for {what}; the node's instances: {view}");
        }
        index = cat.node_catalog(index, left).await.expect("read").index;
    }
}

async fn wait_check(cat: &MemoryCatalog, check_id: &str, status: Health, output: impl Fn(&str) -> bool) {
    let what = format!("check {check_id} {}", status.as_str());
    wait_for(cat, &what, |s| status_of(s, check_id).is_some_and(|(h, o)| h == status && output(&o))).await;
}

fn writes(cat: &MemoryCatalog) -> Vec<Vec<CatalogCommand>> {
    cat.writes.lock().unwrap().clone()
}

/// Every write the runner made carries at most one `UpdateChecks`.
fn assert_batched(cat: &MemoryCatalog) {
    for w in writes(cat) {
        let n = w.iter().filter(|c| matches!(c, CatalogCommand::UpdateChecks { .. })).count();
        assert!(n <= 1, "one UpdateChecks per write: {w:?}");
    }
}

// ---- the runner ----

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl TestClock {
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// The runner under test; aborted when dropped.
struct Runner(tokio::task::JoinHandle<()>);

impl Drop for Runner {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start(link: Arc<dyn CatalogLink>, exec: Option<Arc<dyn ContainerExec>>, clock: Option<Arc<TestClock>>) -> Runner {
    let mut timing =
        Timing { reap_every: Duration::from_millis(50), catalog_wait: Duration::from_secs(5), ..Timing::default() };
    if let Some(c) = clock {
        timing.clock = c;
    }
    Runner(tokio::spawn(run_with(link, exec, timing)))
}

// ---- a tiny HTTP server whose answer the test sets ----

#[derive(Clone)]
struct Answer {
    status: Arc<AtomicU16>,
    /// The body counts the hits (an output that changes on every probe).
    counting: bool,
    hits: Arc<watch::Sender<BTreeMap<String, usize>>>,
}

struct Server {
    addr: std::net::SocketAddr,
    answer: Answer,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(AxState(a): AxState<Answer>, uri: Uri) -> (StatusCode, String) {
    let mut n = 0;
    a.hits.send_modify(|h| {
        let e = h.entry(uri.path().to_string()).or_default();
        *e += 1;
        n = *e;
    });
    let body = if a.counting { format!("probe {n}") } else { "ok".into() };
    (StatusCode::from_u16(a.status.load(Ordering::SeqCst)).unwrap(), body)
}

impl Server {
    async fn start(counting: bool) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Answer {
            status: Arc::new(AtomicU16::new(200)),
            counting,
            hits: Arc::new(watch::channel(BTreeMap::new()).0),
        };
        let app = axum::Router::new().fallback(self::answer).with_state(answer.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server { addr, answer, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, code: u16) {
        self.answer.status.store(code, Ordering::SeqCst);
    }

    fn hits(&self, path: &str) -> usize {
        self.answer.hits.borrow().get(path).copied().unwrap_or(0)
    }

    /// Waits (at most 10 s) until `path` was asked `n` times.
    async fn wait_hits(&self, path: &str, n: usize) {
        let mut rx = self.answer.hits.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| h.get(path).is_some_and(|x| *x >= n)));
        assert!(waited.await.is_ok(), "timed out waiting for {n} probes of {path} (got {})", self.hits(path));
    }
}

// ---- the tests ----

#[tokio::test]
async fn http_check_follows_the_status_code() {
    let srv = Server::start(false).await;
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![http("web", srv.url("/health"))]))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    let url = srv.url("/health");
    wait_check(&cat, "web", Health::Passing, |o| o == format!("HTTP GET {url}: 200 OK Output: ok")).await;
    srv.set(503);
    wait_check(&cat, "web", Health::Critical, |o| o == format!("HTTP GET {url}: 503 Service Unavailable Output: ok"))
        .await;
    srv.set(200);
    wait_check(&cat, "web", Health::Passing, |_| true).await;
    srv.set(429);
    wait_check(&cat, "web", Health::Warning, |o| o.contains("429 Too Many Requests")).await;
    assert_batched(&cat);
}

#[tokio::test]
async fn http_check_sends_method_and_headers() {
    // A raw listener: the test reads the request as it arrived.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
        }
    });
    let headers = BTreeMap::from([("X-Probe".to_string(), vec!["one".to_string()])]);
    let kind =
        CheckKind::Http { url: format!("http://{addr}/ready"), method: "HEAD".into(), headers, tls_skip_verify: false };
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![check("web", kind)]))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    let req = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let lower = req.to_lowercase();
    assert!(req.starts_with("HEAD /ready HTTP/1.1\r\n"), "{req}");
    assert!(lower.contains("x-probe: one\r\n") && lower.contains("user-agent: consul health check\r\n"), "{req}");
    wait_check(&cat, "web", Health::Passing, |o| {
        o.starts_with(&format!("HTTP HEAD http://{addr}/ready: 204 No Content"))
    })
    .await;
    server.abort();
}

/// An HTTPS server on 127.0.0.1 with a certificate from a cluster CA of its own (trusted by
/// nobody): one answer per connection.
async fn https_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use shoal_registry::pki::tls::{ClusterCa, ClusterCaExt, LiveCert};
    let ca = ClusterCa::generate().unwrap();
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let cert = ca.issue(7, Role::Worker, &[ip], Duration::from_secs(3600)).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(LiveCert::new(cert).unwrap().server_config().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure").await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn https_check_verifies_certificates_unless_told_not_to() {
    let (addr, server) = https_server().await;
    let url = format!("https://{addr}/health");
    let kind = |tls_skip_verify| CheckKind::Http {
        url: url.clone(),
        method: String::new(),
        headers: BTreeMap::new(),
        tls_skip_verify,
    };
    let cat = catalog(vec![(
        Source::Agent,
        inst("web-1", None, vec![check("skip", kind(true)), check("verify", kind(false))]),
    )]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "skip", Health::Passing, |o| o == format!("HTTP GET {url}: 200 OK Output: secure")).await;
    wait_check(&cat, "verify", Health::Critical, |o| {
        o.starts_with(&format!("HTTP GET {url}: ")) && o.contains("certificate")
    })
    .await;
    server.abort();
}

#[tokio::test]
async fn tcp_check_passes_on_connect_and_is_critical_on_a_closed_port() {
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_addr = open.local_addr().unwrap().to_string();
    let closed_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }; // Dropped: nothing listens there any more.
    let cat = catalog(vec![(
        Source::Agent,
        inst(
            "web-1",
            None,
            vec![
                check("open", CheckKind::Tcp { addr: open_addr.clone() }),
                check("closed", CheckKind::Tcp { addr: closed_addr.clone() }),
            ],
        ),
    )]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "open", Health::Passing, |o| o == format!("TCP connect {open_addr}: Success")).await;
    // Registered critical with no output: the first probe's output is written at once.
    wait_check(&cat, "closed", Health::Critical, |o| {
        o.starts_with(&format!("TCP connect {closed_addr}: ")) && o.len() > 20
    })
    .await;
    drop(open);
}

fn renew(cat: &MemoryCatalog, check_id: &str, status: Health, output: &str) {
    let update = CheckUpdate { check_id: check_id.into(), status, output: output.into(), ttl_renewal: true };
    let r = cat.apply(&Command::Catalog(CatalogCommand::UpdateChecks { node: NODE.into(), updates: vec![update] }));
    assert_eq!(r, CommandResult::Applied(true), "a renewal is always a change");
}

#[tokio::test]
async fn ttl_check_expires_to_critical_and_renewals_keep_it_alive() {
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![ttl("beat", 600)]))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    renew(&cat, "beat", Health::Passing, "ok");
    // A client renewing every 200 ms keeps a 600 ms TTL alive for 1.2 s, twice its TTL; the same
    // status and output each time, so only `renewals` tells the runner.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(cat.read(|s| status_of(s, "beat")), Some((Health::Passing, "ok".into())), "renewed in time");
        renew(&cat, "beat", Health::Passing, "ok");
    }
    assert!(writes(&cat).is_empty(), "nothing expired: {:?}", writes(&cat));
    wait_check(&cat, "beat", Health::Critical, |o| o == "TTL expired (last output before timeout follows): ok").await;
    // An update after expiry starts the timer again, with the new output.
    renew(&cat, "beat", Health::Warning, "slow");
    wait_check(&cat, "beat", Health::Critical, |o| o == "TTL expired (last output before timeout follows): slow").await;
    assert_eq!(writes(&cat).len(), 2, "one write per expiry: {:?}", writes(&cat));
}

#[tokio::test]
async fn ttl_check_never_updated_expires_with_the_plain_text() {
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![ttl("beat", 150)]))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "beat", Health::Critical, |o| o == "TTL expired").await;
}

#[tokio::test]
async fn identical_results_write_nothing() {
    let srv = Server::start(false).await;
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![http("web", srv.url("/health"))]))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "web", Health::Passing, |_| true).await;
    let before = writes(&cat).len();
    let hits = srv.hits("/health");
    srv.wait_hits("/health", hits + 5).await;
    assert_eq!(writes(&cat).len(), before, "five more passing probes, no write: {:?}", writes(&cat));
    assert_eq!(before, 1, "one write: critical to passing");
}

#[tokio::test]
async fn output_only_changes_are_held_back() {
    let srv = Server::start(true).await;
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![http("web", srv.url("/health"))]))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "web", Health::Passing, |_| true).await;
    let (_, first) = cat.read(|s| status_of(s, "web")).unwrap();
    let hits = srv.hits("/health");
    srv.wait_hits("/health", hits + 5).await;
    assert_eq!(writes(&cat).len(), 1, "every probe's output differs, still one write: {:?}", writes(&cat));
    assert_eq!(cat.read(|s| status_of(s, "web")).unwrap().1, first);
    // A status change is written at once, with the newest output.
    srv.set(500);
    wait_check(&cat, "web", Health::Critical, |o| o.contains("500 Internal Server Error Output: probe")).await;
}

struct FakeExec {
    code: AtomicI64,
    calls: Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait]
impl ContainerExec for FakeExec {
    async fn exec(&self, container: &str, args: &[String], _timeout: Duration) -> Result<(i64, String), String> {
        self.calls.lock().unwrap().push((container.to_string(), args.to_vec()));
        let code = self.code.load(Ordering::SeqCst);
        Ok((code, format!("exited {code}")))
    }
}

#[tokio::test]
async fn exec_check_runs_in_the_instance_container_and_maps_exit_codes() {
    let exec = Arc::new(FakeExec { code: AtomicI64::new(0), calls: Mutex::default() });
    let args = vec!["curl".to_string(), "-f".to_string(), "localhost".to_string()];
    let cat = catalog(vec![(
        Source::Registrator,
        inst(
            "web-1",
            Some("c0ffee"),
            vec![
                check("own", CheckKind::Exec { args: args.clone(), container: String::new() }),
                check("other", CheckKind::Exec { args: vec!["true".into()], container: "sidecar".into() }),
            ],
        ),
    )]);
    let _r = start(Arc::new(cat.clone()), Some(exec.clone()), None);
    wait_check(&cat, "own", Health::Passing, |o| o == "exited 0").await;
    exec.code.store(1, Ordering::SeqCst);
    wait_check(&cat, "own", Health::Warning, |o| o == "exited 1").await;
    exec.code.store(2, Ordering::SeqCst);
    wait_check(&cat, "own", Health::Critical, |o| o == "exited 2").await;
    let calls = exec.calls.lock().unwrap().clone();
    assert!(calls.contains(&("c0ffee".to_string(), args)), "empty container: the instance's own; {calls:?}");
    assert!(calls.iter().any(|(c, _)| c == "sidecar"), "a named container is used as named; {calls:?}");
}

#[tokio::test]
async fn exec_check_without_a_runtime_is_critical() {
    let cat = catalog(vec![(
        Source::Agent,
        inst(
            "web-1",
            Some("c0ffee"),
            vec![check("own", CheckKind::Exec { args: vec!["true".into()], container: String::new() })],
        ),
    )]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "own", Health::Critical, |o| o.contains("need a container runtime")).await;
}

#[tokio::test]
async fn checks_restart_on_a_new_definition_and_stop_when_removed() {
    let (a, b) = (Server::start(false).await, Server::start(false).await);
    b.set(503);
    let spec = |one: String| inst("web-1", None, vec![http("one", one), http("two", a.url("/two"))]);
    let cat = catalog(vec![(Source::Agent, spec(a.url("/one")))]);
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "one", Health::Passing, |_| true).await;
    wait_check(&cat, "two", Health::Passing, |_| true).await;
    // A new URL is a new definition: the check starts over (critical, no output) and probes b.
    register(&cat, Source::Agent, spec(b.url("/one")));
    let b_url = b.url("/one");
    wait_check(&cat, "one", Health::Critical, |o| o.starts_with(&format!("HTTP GET {b_url}: 503"))).await;
    let on_a = a.hits("/one");
    let r = cat.apply(&Command::Catalog(CatalogCommand::DeregisterCheck { node: NODE.into(), check_id: "one".into() }));
    assert_eq!(r, CommandResult::Applied(true));
    let on_b = b.hits("/one");
    // Four intervals of the check that stays: the removed one would have probed as often.
    a.wait_hits("/two", a.hits("/two") + 4).await;
    assert!(b.hits("/one") <= on_b + 1, "the removed check stopped ({} > {on_b} + 1)", b.hits("/one"));
    assert!(a.hits("/one") <= on_a + 1, "the old definition stopped");
    assert_eq!(cat.read(|s| status_of(s, "two")).map(|s| s.0), Some(Health::Passing));
}

#[tokio::test]
async fn node_checks_run_and_catalog_instances_are_left_alone() {
    let srv = Server::start(false).await;
    let cat = catalog(vec![
        (Source::Catalog, inst("ext-1", None, vec![http("ext", srv.url("/ext"))])),
        (Source::Agent, inst("web-1", None, vec![http("web", srv.url("/web"))])),
    ]);
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = open.local_addr().unwrap().to_string();
    let r = cat.apply(&Command::Catalog(CatalogCommand::RegisterCheck {
        node: NODE.into(),
        service_id: None,
        check: check("node-tcp", CheckKind::Tcp { addr: addr.clone() }),
    }));
    assert_eq!(r, CommandResult::Applied(true));
    let _r = start(Arc::new(cat.clone()), None, None);
    wait_check(&cat, "node-tcp", Health::Passing, |o| o == format!("TCP connect {addr}: Success")).await;
    srv.wait_hits("/web", 4).await;
    assert_eq!(srv.hits("/ext"), 0, "nobody probes a catalog registration");
    assert_eq!(cat.read(|s| status_of(s, "ext")), Some((Health::Critical, String::new())));
}

#[tokio::test]
async fn an_instance_critical_too_long_is_deregistered() {
    let srv = Server::start(false).await;
    let mut c = http("web", srv.url("/health"));
    c.def.deregister_after_ms = Some(60_000);
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![c]))]);
    let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
    let _r = start(Arc::new(cat.clone()), None, Some(clock.clone()));
    wait_check(&cat, "web", Health::Passing, |_| true).await;
    // Passing: no time counts (it was critical at registration, which is forgotten now).
    clock.advance(120_000);
    srv.set(503);
    wait_check(&cat, "web", Health::Critical, |_| true).await;
    assert!(cat.read(|s| s.catalog.instance(NODE, "web-1").is_some()), "critical only just now");
    clock.advance(61_000);
    wait_for(&cat, "web-1 deregistered", |s| s.catalog.instance(NODE, "web-1").is_none()).await;
    let deregs: Vec<CatalogCommand> =
        writes(&cat).into_iter().flatten().filter(|c| matches!(c, CatalogCommand::Deregister { .. })).collect();
    assert_eq!(deregs, vec![CatalogCommand::Deregister { node: NODE.into(), id: "web-1".into() }]);
    assert_batched(&cat);
}

/// A link whose first reads and writes fail.
struct Flaky {
    inner: MemoryCatalog,
    failing_reads: AtomicUsize,
    failing_writes: AtomicUsize,
}

fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| x.checked_sub(1)).is_ok()
}

#[async_trait]
impl CatalogLink for Flaky {
    async fn node_catalog(&self, index: u64, wait: Duration) -> Result<NodeCatalog, shoal_registry::Error> {
        if take_one(&self.failing_reads) {
            return Err(shoal_registry::Error::Unavailable("no leader".into()));
        }
        self.inner.node_catalog(index, wait).await
    }

    async fn write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, shoal_registry::Error> {
        if take_one(&self.failing_writes) {
            return Err(shoal_registry::Error::Unavailable("no leader".into()));
        }
        self.inner.write(cmds).await
    }
}

#[tokio::test]
async fn read_and_write_errors_are_retried() {
    let srv = Server::start(false).await;
    let cat = catalog(vec![(Source::Agent, inst("web-1", None, vec![http("web", srv.url("/health"))]))]);
    let flaky =
        Arc::new(Flaky { inner: cat.clone(), failing_reads: AtomicUsize::new(1), failing_writes: AtomicUsize::new(2) });
    let _r = start(flaky.clone(), None, None);
    wait_check(&cat, "web", Health::Passing, |_| true).await;
    assert_eq!(flaky.failing_reads.load(Ordering::SeqCst), 0);
    assert_eq!(flaky.failing_writes.load(Ordering::SeqCst), 0, "two failed writes, then one that took");
}
