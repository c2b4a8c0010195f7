//! The battery every [`Reloader`] passes (feature `testsuite`).
//!
//! It plays the runner's part (render → check → atomic write → `reload()`) against a real proxy
//! and asks the proxy, over a fresh connection each time, which generation it serves:
//!
//! | check | what must hold |
//! |---|---|
//! | describe | `describe()` names the proxy (the words the target lists) |
//! | check command | if there is one: a good candidate passes, a bad one fails quoting the proxy |
//! | good reload | generation N is served as soon as `reload()` returns `Ok`: no extra wait |
//! | reloads in a row | several reloads, each served at once |
//! | refused | a config the proxy rejects is `Err(Refused)` quoting the proxy; N is still served |
//! | good after refused | the next good reload works |
//! | refused again | a second refusal after a success is seen too (counters that reset) |
//! | unchanged | reloading the same file is `Ok` and keeps serving |
//!
//! The proxy is started by the caller, serving generation 1 from [`Target::config_path`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ReloadError, Reloader, ShellOutcome, fill_placeholder, run_shell};

/// Asks the running proxy which generation of the config it serves.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The generation served to a new connection, or what went wrong.
    async fn generation(&self) -> Result<u64, String>;
}

/// `GET path` over a new connection (`Connection: close`); the generation is the `x-gen`
/// header if there is one, else the body.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// The proxy's loopback frontend.
    pub addr: SocketAddr,
    /// The path that answers with the generation.
    pub path: String,
}

#[async_trait]
impl Probe for HttpProbe {
    async fn generation(&self) -> Result<u64, String> {
        let (status, headers, body) = http_get(self.addr, &self.path).await?;
        if status != 200 {
            return Err(format!("GET http://{}{} answered {status}: {}", self.addr, self.path, body.trim()));
        }
        let header = headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("x-gen").then(|| v.trim().to_string())
        });
        let text = header.unwrap_or_else(|| body.trim().to_string());
        text.parse().map_err(|_| format!("GET http://{}{}: no generation in {text:?}", self.addr, self.path))
    }
}

/// One HTTP/1.1 GET on a new connection: status, header block, body (2 s bound).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String, String), String> {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("write to {addr}: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| format!("read from {addr}: {e}"))?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) =
            text.split_once("\r\n\r\n").ok_or_else(|| format!("{addr}: no HTTP response in {text:?}"))?;
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{addr}: bad status line {status_line:?}"))?;
        Ok((status, headers.to_string(), body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(2), talk)
        .await
        .map_err(|_| format!("GET http://{addr}{path}: no answer within 2 s"))?
}

/// A proxy under test, as the battery sees it.
pub struct Target {
    /// The file the proxy reads (the runner's DEST); holds generation 1 when the battery starts.
    pub config_path: PathBuf,
    /// The config text of generation N (N ≥ 1), whose proxy serves N to the probe.
    pub good: Box<dyn Fn(u64) -> String + Send + Sync>,
    /// A config the proxy refuses (it is written to DEST as it is, as if no check ran).
    pub bad: String,
    /// Words the proxy's refusal contains (e.g. the unknown directive), to be quoted in the error.
    pub bad_reason: String,
    /// Words `describe()` must contain (the proxy's name, its PID, the config path).
    pub describe_mentions: Vec<String>,
    /// How to ask which generation is served.
    pub probe: Box<dyn Probe>,
}

/// The outcome of one check.
#[derive(Debug)]
pub struct Check {
    /// Its name (the table in the module docs).
    pub name: &'static str,
    /// `Err` says what was expected and what was seen.
    pub outcome: Result<(), String>,
    /// How long it took (reloads included).
    pub took: Duration,
}

/// Every check's outcome, in order.
#[derive(Debug)]
pub struct Report {
    /// What was tested (`describe()`).
    pub subject: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// The names of the checks that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks.iter().filter(|c| c.outcome.is_err()).map(|c| c.name).collect()
    }

    /// Panics with every failure if any check failed.
    pub fn assert_passed(&self) {
        let failures: Vec<String> =
            self.checks.iter().filter_map(|c| c.outcome.as_ref().err().map(|e| format!("  {}: {e}", c.name))).collect();
        assert!(
            failures.is_empty(),
            "{} failed {} of {} checks:\n{}",
            self.subject,
            failures.len(),
            self.checks.len(),
            failures.join("\n")
        );
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}:", self.subject)?;
        for c in &self.checks {
            let verdict = match &c.outcome {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("FAILED: {e}"),
            };
            writeln!(f, "  {:<38} {:>9.1?}  {verdict}", c.name, c.took)?;
        }
        Ok(())
    }
}

/// How many fresh connections each "served" check makes (an old worker still accepting on the
/// shared socket would answer some of them).
const PROBES: usize = 5;

/// Runs the battery against `reloader` and `target`; every check runs even if an earlier one
/// failed (later ones then say how far things got).
pub async fn run(reloader: &dyn Reloader, target: &Target) -> Report {
    let mut checks = Vec::new();
    let mut step =
        async |name: &'static str, fut: std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>| {
            let t = Instant::now();
            let outcome = fut.await;
            checks.push(Check { name, outcome, took: t.elapsed() });
        };
    step("describe", Box::pin(async { describe(reloader, target) })).await;
    step("serves generation 1 before any reload", Box::pin(served(target, 1))).await;
    step("check command", Box::pin(check_command(reloader, target))).await;
    step("good reload", Box::pin(good_reload(reloader, target, 2))).await;
    step(
        "reloads in a row",
        Box::pin(async {
            for g in 3..=5 {
                good_reload(reloader, target, g).await.map_err(|e| format!("generation {g}: {e}"))?;
            }
            Ok(())
        }),
    )
    .await;
    step("refused", Box::pin(refused(reloader, target, 5))).await;
    step("good after refused", Box::pin(good_reload(reloader, target, 6))).await;
    step("refused again", Box::pin(refused(reloader, target, 6))).await;
    step("good after the second refusal", Box::pin(good_reload(reloader, target, 7))).await;
    step(
        "unchanged",
        Box::pin(async {
            reloader.reload().await.map_err(|e| format!("reloading an unchanged config: {e}"))?;
            served(target, 7).await
        }),
    )
    .await;
    Report { subject: reloader.describe(), checks }
}

fn describe(reloader: &dyn Reloader, target: &Target) -> Result<(), String> {
    let d = reloader.describe();
    let missing: Vec<&String> = target.describe_mentions.iter().filter(|m| !d.contains(m.as_str())).collect();
    if d.trim().is_empty() || !missing.is_empty() {
        return Err(format!("describe() = {d:?} does not mention {missing:?}"));
    }
    Ok(())
}

/// Every one of [`PROBES`] new connections is served `want`.
async fn served(target: &Target, want: u64) -> Result<(), String> {
    for i in 0..PROBES {
        match target.probe.generation().await {
            Ok(g) if g == want => {}
            Ok(g) => return Err(format!("probe {} of {PROBES} was served generation {g}, want {want}", i + 1)),
            Err(e) => return Err(format!("probe {} of {PROBES} for generation {want}: {e}", i + 1)),
        }
    }
    Ok(())
}

/// Writes DEST the way the runner does: a temp file in the same directory, then `rename`.
fn write_atomically(target: &Target, text: &str) -> Result<(), String> {
    let tmp = target.config_path.with_extension("conformance-tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &target.config_path))
        .map_err(|e| format!("writing {}: {e}", target.config_path.display()))
}

async fn good_reload(reloader: &dyn Reloader, target: &Target, generation: u64) -> Result<(), String> {
    write_atomically(target, &(target.good)(generation))?;
    let t = Instant::now();
    reloader.reload().await.map_err(|e| format!("reload of generation {generation} failed: {e}"))?;
    let took = t.elapsed();
    served(target, generation).await.map_err(|e| format!("right after reload() returned Ok ({took:?}): {e}"))
}

async fn refused(reloader: &dyn Reloader, target: &Target, still: u64) -> Result<(), String> {
    write_atomically(target, &target.bad)?;
    match reloader.reload().await {
        Ok(()) => return Err("reload() of a config the proxy refuses returned Ok".into()),
        Err(e @ ReloadError::Refused { .. }) => {
            let msg = e.to_string();
            if !msg.contains(&target.bad_reason) {
                return Err(format!("the refusal does not quote the proxy's reason {:?}: {msg}", target.bad_reason));
            }
        }
        Err(e) => return Err(format!("want a Refused error, got: {e}")),
    }
    served(target, still)
        .await
        .map_err(|e| format!("after the refusal the previous generation must still be served: {e}"))
}

async fn check_command(reloader: &dyn Reloader, target: &Target) -> Result<(), String> {
    let Some(template) = reloader.check_command() else { return Ok(()) };
    if !template.contains("{}") {
        return Err(format!("check command {template:?} has no {{}} for the candidate file"));
    }
    let candidate = target.config_path.with_extension("candidate");
    let run = async |text: &str| -> Result<(bool, String), String> {
        std::fs::write(&candidate, text).map_err(|e| format!("writing {}: {e}", candidate.display()))?;
        let cmd = fill_placeholder(&template, &candidate);
        match run_shell(&cmd, Duration::from_secs(20)).await.map_err(|e| e.to_string())? {
            ShellOutcome::Done { status, output } => Ok((status.success(), output)),
            ShellOutcome::TimedOut => Err(format!("`{cmd}` ran past 20 s")),
        }
    };
    let result = async {
        let (ok, out) = run(&(target.good)(2)).await?;
        if !ok {
            return Err(format!("the check refused a good config: {out}"));
        }
        let (ok, out) = run(&target.bad).await?;
        if ok {
            return Err("the check passed a config the proxy refuses".into());
        }
        if !out.contains(&target.bad_reason) {
            return Err(format!("the check's output does not quote {:?}: {out}", target.bad_reason));
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_file(&candidate);
    result
}
