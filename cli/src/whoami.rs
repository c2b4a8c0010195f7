//! `shoal whoami` and `shoal probe`: a test workload carried by the shoal binary itself, so a
//! `FROM scratch` image holding only `/shoal` (see `compose/Dockerfile`) can be scheduled by Shoal
//! and answer who it is, without pulling any image.
//!
//! ```text
//!   GET  /        text/plain: Hostname, Node, Service, Task, Slot, RemoteAddr, request line, headers
//!   GET  /api     the same identity as JSON
//!   GET  /health  the current health code: "ok" for 2xx, "unhealthy" otherwise (200 at start)
//!   POST /health  body "503" -> later GETs answer 503 (as traefik/whoami)
//!   GET  /<any>   as GET /, so path-based routing can be observed
//!
//!   SIGTERM / SIGINT  -> "whoami stopping on SIGTERM" on stdout, exit 0
//!   --exit-after SECS -> "whoami exiting with code N" on stderr, exit --exit-code N
//! ```
//!
//! The identity comes from the `SHOAL_*` variables the agent sets in each container; a variable
//! that is unset prints as empty. As PID 1 of a container the process must handle SIGTERM itself:
//! the kernel drops signals PID 1 has no handler for, and `docker stop` would wait out its timeout.
//!
//! `shoal probe URL` GETs a plain-http URL and exits 0 on a 2xx, else 1 with the reason: a
//! container health check that needs no shell or curl, e.g.
//! `["CMD","/shoal","probe","http://127.0.0.1:8080/health"]`.

use std::future::IntoFuture;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

/// Flags of `shoal whoami`.
#[derive(Args, Debug)]
pub struct WhoamiArgs {
    /// TCP port to listen on (0 picks a free one; the line printed at start names it).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// Exit after this many seconds (fractions allowed), with --exit-code: a task that fails.
    #[arg(long, value_name = "SECS", value_parser = parse_exit_after)]
    pub exit_after: Option<Duration>,
    /// Exit status used with --exit-after.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "exit_after")]
    pub exit_code: u8,
}

/// Flags of `shoal probe`.
#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// URL to GET; plain http only (e.g. http://127.0.0.1:8080/health).
    pub url: String,
    /// Give up after this many milliseconds (connect and answer together).
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

/// Who this instance is, read once at start.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
struct Identity {
    hostname: String,
    node_id: String,
    node_name: String,
    service: String,
    task_id: String,
    task_name: String,
    slot: String,
}

impl Identity {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        Identity {
            hostname: hostname(),
            node_id: var("SHOAL_NODE_ID"),
            node_name: var("SHOAL_NODE_NAME"),
            service: var("SHOAL_SERVICE_NAME"),
            task_id: var("SHOAL_TASK_ID"),
            task_name: var("SHOAL_TASK_NAME"),
            slot: var("SHOAL_TASK_SLOT"),
        }
    }
}

/// The body of `GET /api`.
#[derive(Serialize)]
struct ApiAnswer<'a> {
    #[serde(flatten)]
    identity: &'a Identity,
    remote_addr: String,
}

/// State shared by the handlers.
struct Shared {
    identity: Identity,
    /// The code `GET /health` answers; only codes `parse_health_code` accepted are stored.
    health: AtomicU16,
}

/// The kernel's hostname, read from files: `gethostname` would do too, but name lookups of any
/// kind are avoided because a static glibc binary cannot load NSS modules in a scratch image.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .unwrap_or_default()
}

fn parse_exit_after(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("expected a finite, non-negative number of seconds, got {s:?}"))
}

/// Parses the body of `POST /health`: a status code in 200..=599, surrounding whitespace allowed.
fn parse_health_code(body: &str) -> Result<StatusCode, String> {
    let invalid = || format!("the health status must be a number in 200..=599, got {:?}", body.trim());
    let code: u16 = body.trim().parse().map_err(|_| invalid())?;
    if !(200..=599).contains(&code) {
        return Err(invalid());
    }
    StatusCode::from_u16(code).map_err(|_| invalid())
}

/// `user-agent` -> `User-Agent`: the http crate keeps header names lowercase; the text page shows
/// them as clients usually write them.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The `GET /` page.
fn render_text(id: &Identity, remote: SocketAddr, req: &Request) -> String {
    let mut out = format!(
        "Hostname: {}\nNode: {} ({})\nService: {}\nTask: {} ({})\nSlot: {}\nRemoteAddr: {remote}\n",
        id.hostname, id.node_name, id.node_id, id.service, id.task_name, id.task_id, id.slot
    );
    out += &format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        out += &format!("{}: {}\n", canonical_header_name(name.as_str()), String::from_utf8_lossy(value.as_bytes()));
    }
    out
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(text))
        .route("/api", get(api))
        .route("/health", get(health).post(set_health))
        .route("/{*path}", get(text))
        .with_state(shared)
}

async fn text(State(s): State<Arc<Shared>>, ConnectInfo(remote): ConnectInfo<SocketAddr>, req: Request) -> String {
    render_text(&s.identity, remote, &req)
}

async fn api(State(s): State<Arc<Shared>>, ConnectInfo(remote): ConnectInfo<SocketAddr>) -> Response {
    Json(ApiAnswer { identity: &s.identity, remote_addr: remote.to_string() }).into_response()
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let code = StatusCode::from_u16(s.health.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
    (code, if code.is_success() { "ok\n" } else { "unhealthy\n" }).into_response()
}

async fn set_health(State(s): State<Arc<Shared>>, body: String) -> Response {
    match parse_health_code(&body) {
        Ok(code) => {
            let old = s.health.swap(code.as_u16(), Ordering::Relaxed);
            println!("whoami health set to {} (was {old})", code.as_u16());
            (StatusCode::OK, format!("health set to {}\n", code.as_u16())).into_response()
        }
        Err(msg) => (StatusCode::BAD_REQUEST, msg + "\n").into_response(),
    }
}

/// Runs `shoal whoami` until SIGTERM or SIGINT (then returns, so the process exits 0) or until
/// `--exit-after` (then exits the process with `--exit-code`).
pub async fn run(args: WhoamiArgs) -> Result<()> {
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr().context("cannot read the listening address")?;
    // Handlers are installed before the start line: whoever reads it may signal at once.
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;

    let shared = Arc::new(Shared { identity: Identity::from_env(), health: AtomicU16::new(200) });
    let server = axum::serve(listener, router(shared).into_make_service_with_connect_info::<SocketAddr>());
    println!("whoami listening on {addr}");

    let exit_after = async {
        match args.exit_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    // Stopping drops the server with its open connections: a test workload has nothing to drain.
    tokio::select! {
        served = server.into_future() => served.context("the whoami server stopped"),
        _ = term.recv() => {
            println!("whoami stopping on SIGTERM");
            Ok(())
        }
        _ = int.recv() => {
            println!("whoami stopping on SIGINT");
            Ok(())
        }
        () = exit_after => {
            eprintln!("whoami exiting with code {}", args.exit_code);
            let _ = std::io::stdout().flush();
            std::process::exit(args.exit_code.into());
        }
    }
}

/// Runs `shoal probe`: `Ok` on a 2xx answer, else an error saying why (the process exits 1).
pub async fn probe(args: ProbeArgs) -> Result<()> {
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("invalid URL {:?}", args.url))?;
    if url.scheme() != "http" {
        bail!("probe speaks plain http only, got {url}");
    }
    // No CA roots: probe never speaks TLS, and loading the system's roots fails in a scratch image
    // that has none ("No CA certificates were loaded from the system").
    let client = reqwest::Client::builder()
        .tls_certs_only(std::iter::empty())
        .no_proxy()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
        .context("cannot build the HTTP client")?;
    let answer = match client.get(url.clone()).send().await {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => bail!("GET {url} timed out after {} ms", args.timeout_ms),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("GET {url} failed"))),
    };
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        let reason: String = body.trim().chars().take(200).collect();
        if reason.is_empty() {
            bail!("GET {url} answered {status}");
        }
        bail!("GET {url} answered {status}: {reason}");
    }
    println!("GET {url} answered {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_codes() {
        let cases: &[(&str, &str, Option<u16>)] = &[
            ("unavailable", "503", Some(503)),
            ("trailing newline", "503\n", Some(503)),
            ("spaces", "  418 ", Some(418)),
            ("lowest", "200", Some(200)),
            ("highest", "599", Some(599)),
            ("below range", "199", None),
            ("above range", "600", None),
            ("zero", "0", None),
            ("negative", "-500", None),
            ("empty", "", None),
            ("word", "unhealthy", None),
            ("fraction", "200.5", None),
            ("too big", "70000", None),
        ];
        for (name, body, want) in cases {
            let got = parse_health_code(body).ok().map(|c| c.as_u16());
            assert_eq!(got, *want, "case {name:?}: body {body:?}");
        }
        let err = parse_health_code("abc").unwrap_err();
        assert!(err.contains("200..=599") && err.contains("\"abc\""), "{err}");
    }

    #[test]
    fn exit_after() {
        let cases: &[(&str, &str, Option<Duration>)] = &[
            ("whole", "2", Some(Duration::from_secs(2))),
            ("fraction", "0.2", Some(Duration::from_millis(200))),
            ("zero", "0", Some(Duration::ZERO)),
            ("negative", "-1", None),
            ("not a number", "soon", None),
            ("infinite", "inf", None),
            ("nan", "NaN", None),
        ];
        for (name, arg, want) in cases {
            assert_eq!(parse_exit_after(arg).ok(), *want, "case {name:?}: {arg:?}");
        }
    }

    #[test]
    fn header_names() {
        let cases = [
            ("single word", "host", "Host"),
            ("two words", "user-agent", "User-Agent"),
            ("three words", "x-forwarded-for", "X-Forwarded-For"),
            ("empty part", "a--b", "A--B"),
        ];
        for (name, input, want) in cases {
            assert_eq!(canonical_header_name(input), want, "case {name:?}");
        }
    }

    #[test]
    fn text_page() {
        let id = Identity {
            hostname: "c0ffee".into(),
            node_id: "n1id".into(),
            node_name: "node-1".into(),
            service: "web".into(),
            task_id: String::new(),
            task_name: "web.2".into(),
            slot: "2".into(),
        };
        let req = Request::builder()
            .uri("/some/path?q=1")
            .header("host", "10.0.0.5:8080")
            .header("user-agent", "curl/8")
            .body(axum::body::Body::empty())
            .unwrap();
        let remote: SocketAddr = "10.0.0.9:41000".parse().unwrap();
        assert_eq!(
            render_text(&id, remote, &req),
            "Hostname: c0ffee\nNode: node-1 (n1id)\nService: web\nTask: web.2 ()\nSlot: 2\n\
             RemoteAddr: 10.0.0.9:41000\nGET /some/path?q=1 HTTP/1.1\nHost: 10.0.0.5:8080\nUser-Agent: curl/8\n"
        );
    }
}
