//! The probes of HTTP, TCP and exec checks: one attempt each, bounded by the check's timeout,
//! always answering with a status and Consul's output texts (an error is a critical result, never
//! an `Err`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use shoal_model::catalog::{CheckDef, Health, MAX_OUTPUT_BYTES};

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    /// The result's status (before the check's counters).
    pub status: Health,
    /// Consul's output text.
    pub output: String,
}

impl Probed {
    fn critical(output: String) -> Self {
        Probed { status: Health::Critical, output }
    }
}

/// Runs a command in a container (`docker exec`), for exec checks. The Docker runtime implements it
/// (`docker/exec.rs`); tests use a fake.
#[async_trait]
pub trait ContainerExec: Send + Sync {
    /// Runs `args` in `container` and waits at most `timeout`: its exit code and its combined
    /// stdout and stderr (at most about 4 KiB, the end kept), or why it could not run.
    async fn exec(&self, container: &str, args: &[String], timeout: Duration) -> Result<(i64, String), String>;
}

/// Consul's default check timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one probe may take: the definition's timeout (10 s when 0), never more than the interval.
pub fn timeout_of(def: &CheckDef) -> Duration {
    let t = if def.timeout_ms == 0 { DEFAULT_TIMEOUT } else { Duration::from_millis(def.timeout_ms) };
    let interval = Duration::from_millis(def.interval_ms);
    if interval.is_zero() { t } else { t.min(interval) }
}

/// An HTTP status as a check result: 2xx passing, 429 warning, anything else critical.
pub fn http_health(code: u16) -> Health {
    match code {
        200..=299 => Health::Passing,
        429 => Health::Warning,
        _ => Health::Critical,
    }
}

/// An exit code as a check result (Consul's script checks): 0 passing, 1 warning, else critical.
pub fn exit_health(code: i64) -> Health {
    match code {
        0 => Health::Passing,
        1 => Health::Warning,
        _ => Health::Critical,
    }
}

/// An error with its causes, `a: b: c` (reqwest's own message names only the outermost).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

/// The two HTTP clients checks use: one that verifies certificates against the system's roots,
/// one for `tls_skip_verify`. Built once per runner; connections are not kept between probes
/// (as Consul's checks, so every probe sees a fresh connect).
pub(crate) struct HttpClients {
    verified: Result<reqwest::Client, String>,
    unverified: Result<reqwest::Client, String>,
}

impl HttpClients {
    pub(crate) fn new() -> Self {
        // reqwest is built without a crypto provider in this workspace: the verifying client takes
        // the process default (ring, as the API client does), the other gets a rustls config of
        // our own that accepts any certificate.
        shoal_registry::pki::tls::install_crypto_provider();
        let base = || reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0);
        let built = |r: reqwest::Result<reqwest::Client>| r.map_err(|e| format!("cannot build the HTTP client: {e}"));
        HttpClients {
            verified: built(base().build()),
            unverified: built(
                base().tls_backend_preconfigured(shoal_registry::pki::tls::unverified_client_config()).build(),
            ),
        }
    }

    /// One HTTP probe: `HTTP GET <url>: 200 OK Output: <first 4 KiB of the body>`.
    pub(crate) async fn probe(
        &self,
        method: &str,
        url: &str,
        headers: &BTreeMap<String, Vec<String>>,
        tls_skip_verify: bool,
        timeout: Duration,
    ) -> Probed {
        let method = if method.is_empty() { "GET" } else { method };
        let client = match if tls_skip_verify { &self.unverified } else { &self.verified } {
            Ok(c) => c,
            Err(e) => return Probed::critical(e.clone()),
        };
        let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return Probed::critical(format!("HTTP {method} {url}: invalid method"));
        };
        let mut req = client.request(m, url).timeout(timeout);
        let has = |name: &str| headers.keys().any(|k| k.eq_ignore_ascii_case(name));
        // Consul's defaults; a check's own headers replace them.
        if !has("user-agent") {
            req = req.header("User-Agent", "Consul Health Check");
        }
        if !has("accept") {
            req = req.header("Accept", "text/plain, text/*, */*");
        }
        for (k, values) in headers {
            for v in values {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let attempt = async {
            let mut resp = req.send().await?;
            let status = resp.status();
            let mut body = Vec::new();
            while body.len() < MAX_OUTPUT_BYTES {
                match resp.chunk().await? {
                    Some(c) => body.extend_from_slice(&c),
                    None => break,
                }
            }
            body.truncate(MAX_OUTPUT_BYTES);
            Ok::<_, reqwest::Error>((status, body))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Probed::critical(format!("HTTP {method} {url}: timed out after {timeout:?}")),
            // The URL is in the output already.
            Ok(Err(e)) => Probed::critical(format!("HTTP {method} {url}: {}", chain(&e.without_url()))),
            Ok(Ok((status, body))) => Probed {
                status: http_health(status.as_u16()),
                output: format!(
                    "HTTP {method} {url}: {} {} Output: {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    String::from_utf8_lossy(&body)
                ),
            },
        }
    }
}

/// One TCP probe: `TCP connect <addr>: Success`, or critical with the error.
pub(crate) async fn tcp(addr: &str, timeout: Duration) -> Probed {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probed { status: Health::Passing, output: format!("TCP connect {addr}: Success") },
        Ok(Err(e)) => Probed::critical(format!("TCP connect {addr}: {e}")),
        Err(_) => Probed::critical(format!("TCP connect {addr}: timed out after {timeout:?}")),
    }
}

/// One exec probe through the container runtime; `container` `None`: the instance has none.
pub(crate) async fn exec(
    runtime: Option<&dyn ContainerExec>,
    container: Option<&str>,
    args: &[String],
    timeout: Duration,
) -> Probed {
    let Some(runtime) = runtime else {
        return Probed::critical("exec checks need a container runtime; this agent has none".into());
    };
    let Some(container) = container.filter(|c| !c.is_empty()) else {
        return Probed::critical("exec check: the instance has no container to run it in".into());
    };
    // The runtime bounds its own wait; this one also covers a runtime that does not.
    match tokio::time::timeout(timeout, runtime.exec(container, args, timeout)).await {
        Err(_) => Probed::critical(format!("Timed out ({timeout:?}) running check")),
        Ok(Err(e)) => Probed::critical(e),
        Ok(Ok((code, output))) => Probed { status: exit_health(code), output },
    }
}

/// Collects a command's output keeping at most its last `cap` bytes (Consul's circular buffer for
/// script checks: the end of the output says why it failed), and says so when it cut.
#[derive(Debug)]
pub(crate) struct OutputTail {
    cap: usize,
    buf: Vec<u8>,
    total: usize,
}

impl OutputTail {
    /// Room for the `Captured N of M bytes` line within the catalog's 4 KiB.
    pub(crate) fn new() -> Self {
        OutputTail { cap: MAX_OUTPUT_BYTES - 64, buf: Vec::new(), total: 0 }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }

    pub(crate) fn finish(self) -> String {
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.total > self.buf.len() {
            format!("Captured {} of {} bytes\n...\n{text}", self.buf.len(), self.total)
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_codes() {
        let cases = [
            ("200 ok", 200, Health::Passing),
            ("204 no content", 204, Health::Passing),
            ("299 edge of 2xx", 299, Health::Passing),
            ("3xx left after following redirects", 301, Health::Critical),
            ("429 too many requests", 429, Health::Warning),
            ("404", 404, Health::Critical),
            ("503", 503, Health::Critical),
        ];
        for (name, code, want) in cases {
            assert_eq!(http_health(code), want, "{name}");
        }
    }

    #[test]
    fn exit_codes() {
        let cases = [
            ("0 passing", 0, Health::Passing),
            ("1 warning", 1, Health::Warning),
            ("2 critical", 2, Health::Critical),
            ("126 cannot run", 126, Health::Critical),
            ("-1 unknown", -1, Health::Critical),
        ];
        for (name, code, want) in cases {
            assert_eq!(exit_health(code), want, "{name}");
        }
    }

    #[test]
    fn timeouts() {
        let def = |interval_ms, timeout_ms| CheckDef { interval_ms, timeout_ms, ..CheckDef::manual() };
        let cases = [
            ("0 is 10 s", def(30_000, 0), Duration::from_secs(10)),
            ("0 but a shorter interval", def(2_000, 0), Duration::from_secs(2)),
            ("set and shorter than the interval", def(30_000, 500), Duration::from_millis(500)),
            ("never more than the interval", def(1_000, 5_000), Duration::from_secs(1)),
        ];
        for (name, d, want) in cases {
            assert_eq!(timeout_of(&d), want, "{name}");
        }
    }

    #[test]
    fn output_tail_keeps_the_end() {
        let mut t = OutputTail::new();
        t.push(b"short");
        assert_eq!(t.finish(), "short");
        let mut t = OutputTail::new();
        t.push(&vec![b'a'; 5000]);
        t.push(b"the end");
        let out = t.finish();
        assert!(out.starts_with(&format!("Captured {} of 5007 bytes\n...\n", MAX_OUTPUT_BYTES - 64)), "{out}");
        assert!(out.ends_with("the end") && out.len() <= MAX_OUTPUT_BYTES, "{}", out.len());
    }
}
