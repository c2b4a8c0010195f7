//! `shoal router`: consul-template's job and the built-in edge proxy. With `--template`, renders
//! templates from the catalog of the node at `--http-addr`, validates, installs and reloads them;
//! with `--listen`, routes HTTP itself, its route table swapped on every catalog change; both may
//! be given (see router/README.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_router::proxy::ProxyOptions;
use shoal_router::reload::haproxy::{HaproxyMaster, HaproxyOptions};
use shoal_router::reload::nginx::{NginxMaster, NginxOptions};
use shoal_router::reload::{CommandReloader, Reloader};
use shoal_router::runner::{EnvLookup, Options, Router, Starter};
use shoal_router::source::{ApiSource, Source};
use shoal_router::template::{Job, TemplateSpec};

use crate::client::ApiClient;

#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    /// A template to keep rendered: SRC:DEST[:RELOAD_CMD] (repeatable). RELOAD_CMD runs with
    /// `sh -c` after each change, e.g. `systemctl reload haproxy`.
    #[arg(long = "template", value_name = "SRC:DEST[:RELOAD_CMD]", required_unless_present = "listen")]
    pub templates: Vec<TemplateSpec>,
    /// Validates each candidate config before it is installed; `{}` is the file, e.g.
    /// 'haproxy -c -q -f {}' or 'nginx -t -q -c {}'.
    #[arg(long, value_name = "CMD")]
    pub check: Option<String>,
    /// Quiescence: render once nothing changed for MIN, at the latest MAX after the first change
    /// (consul-template's `wait`; MIN alone means MAX = 4 × MIN).
    #[arg(long, value_name = "MIN[:MAX]", default_value = "50ms:500ms")]
    pub wait: String,
    /// Start and supervise the proxy reading the first template's DEST, reloading it without
    /// dropping a request: `haproxy` (master-worker) or `nginx`, or a path to either binary.
    /// Its own check (`haproxy -c`, `nginx -t`) validates each config unless --check is given.
    #[arg(long, value_name = "haproxy|nginx|PATH")]
    pub exec: Option<String>,
    /// Render every template once, install and reload what changed, and exit (non-zero on any error).
    #[arg(long)]
    pub once: bool,
    /// Serve the router's status (`/v1/router/status`, `/health`) on this address.
    #[arg(long, value_name = "IP:PORT")]
    pub status: Option<SocketAddr>,
    /// The DNS domain; services are routed as NAME.<domain> unless their labels say otherwise.
    #[arg(long, default_value = "shoal")]
    pub domain: String,
    /// Route HTTP on this address with the built-in proxy (HTTP/1.1 and h2c), by host
    /// (NAME.<domain> or the `shoal.http.host` label) and path (`shoal.http.path`).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// The built-in proxy's threads: 1 runs it on a single-threaded runtime of its own, N > 1 on
    /// a multi-threaded one with N workers.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub proxy_threads: usize,
    /// The built-in proxy: a client must send a request's head (and, between requests, the next
    /// one) within this.
    #[arg(long, value_name = "DUR", default_value = "30s")]
    pub header_timeout: String,
    /// The built-in proxy: a backend must answer a request's head within this (504 after it).
    #[arg(long, value_name = "DUR", default_value = "60s")]
    pub response_timeout: String,
    /// The built-in proxy: connecting to a backend (then the next instance is tried).
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub connect_timeout: String,
    /// The built-in proxy: the largest request head in bytes (431 beyond it).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// The built-in proxy: the largest request body in bytes (413 beyond it).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: u64,
}

fn duration(flag: &str, v: &str) -> Result<Duration> {
    shoal_model::duration::parse(v.trim()).with_context(|| format!("--{flag} {v:?}: not a duration (e.g. 500ms, 30s)"))
}

/// The built-in proxy's options from the flags.
fn proxy_options(args: &RouterArgs) -> Result<ProxyOptions> {
    if args.max_header_bytes < 8192 {
        bail!("--max-header-bytes {}: at least 8192", args.max_header_bytes);
    }
    if args.proxy_threads == 0 {
        bail!("--proxy-threads 0: at least 1");
    }
    Ok(ProxyOptions {
        header_timeout: duration("header-timeout", &args.header_timeout)?,
        response_timeout: duration("response-timeout", &args.response_timeout)?,
        connect_timeout: duration("connect-timeout", &args.connect_timeout)?,
        max_header_bytes: args.max_header_bytes,
        max_body_bytes: args.max_body_bytes,
        ..ProxyOptions::default()
    })
}

/// Starts the built-in proxy on a runtime of its own (so `--proxy-threads` is what serves
/// requests), fed from `source` on the caller's runtime. Returns once it has stopped.
async fn run_proxy(
    args: &RouterArgs,
    source: Arc<dyn Source>,
    std_listener: std::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let opts = proxy_options(args)?;
    let addr = std_listener.local_addr()?;
    let table = shoal_router::proxy::empty_table();
    let feeder = tokio::spawn(shoal_router::proxy::follow(source, args.domain.clone(), table.clone()));
    let threads = args.proxy_threads;
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).thread_name("proxy").enable_all().build()?
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let mut stop_proxy = stop.clone();
    std::thread::Builder::new().name("proxy".into()).spawn(move || {
        runtime.block_on(async move {
            match tokio::net::TcpListener::from_std(std_listener) {
                Ok(listener) => {
                    let shutdown = async move {
                        let _ = stop_proxy.wait_for(|s| *s).await;
                    };
                    shoal_router::proxy::serve(listener, table, opts, shutdown).await
                }
                Err(e) => tracing::error!(error = %e, "the proxy's listener"),
            }
        });
        let _ = done_tx.send(());
    })?;
    eprintln!("shoal router: proxying HTTP on {addr} ({threads} thread(s)), routes from the catalog");
    let _ = stop.wait_for(|s| *s).await;
    let _ = done_rx.await;
    feeder.abort();
    Ok(())
}

/// `MIN[:MAX]`.
fn parse_wait(s: &str) -> Result<(Duration, Duration)> {
    let d = |v: &str| {
        shoal_model::duration::parse(v.trim())
            .with_context(|| format!("--wait {s:?}: {v:?} is not a duration (e.g. 100ms, 2s)"))
    };
    let (min, max) = match s.split_once(':') {
        Some((a, b)) => (d(a)?, d(b)?),
        None => {
            let min = d(s)?;
            (min, min * 4)
        }
    };
    if max < min {
        bail!("--wait {s:?}: MAX must not be below MIN");
    }
    Ok((min, max))
}

/// The proxy `--exec` names: which kind, and the binary.
fn exec_kind(exec: &str) -> Result<(&'static str, String)> {
    let base = std::path::Path::new(exec).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if base.starts_with("haproxy") {
        Ok(("haproxy", exec.to_string()))
    } else if base.starts_with("nginx") {
        Ok(("nginx", exec.to_string()))
    } else {
        bail!("--exec {exec:?}: Shoal supervises haproxy or nginx (a name or a path to either)")
    }
}

/// The check used before the proxy runs (after that its own `check_command`), and its starter.
fn supervised(kind: &'static str, bin: String) -> (Option<String>, Starter) {
    let check = (kind == "haproxy").then(|| format!("{} -c -f {{}}", shoal_router::reload::shell_quote(&bin)));
    let starter: Starter = Box::new(move |config| {
        let bin = bin.clone();
        Box::pin(async move {
            let r: Arc<dyn Reloader> = if kind == "haproxy" {
                let opts = HaproxyOptions { binary: bin.into(), ..HaproxyOptions::default() };
                Arc::new(HaproxyMaster::start(&config, opts).await?)
            } else {
                let opts = NginxOptions { binary: bin.into(), ..NginxOptions::default() };
                Arc::new(NginxMaster::start(&config, opts).await?)
            };
            Ok(r)
        })
    });
    (check, starter)
}

pub async fn run(http_addr: &str, args: RouterArgs) -> Result<()> {
    let wait = parse_wait(&args.wait)?;
    let exec = args.exec.as_deref().map(exec_kind).transpose()?;
    if exec.is_some() && args.templates.first().is_none_or(|t| t.command.is_some()) {
        bail!("--exec supervises and reloads the proxy of the first --template: give one, without a RELOAD_CMD");
    }
    if args.once && (args.listen.is_some() || exec.is_some()) {
        bail!("--once renders and exits: it neither serves nor starts a proxy (drop --listen and --exec)");
    }
    for t in &args.templates {
        if !t.source.exists() {
            bail!("--template {}: no such template file", t.source.display());
        }
    }
    if args.listen.is_some() {
        proxy_options(&args)?;
    }
    let client = ApiClient::new(http_addr)?;
    let source: Arc<dyn Source> = Arc::new(ApiSource::new(client));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let proxy = match args.listen {
        Some(addr) => {
            // Bound here, so a taken address fails the command at once.
            let listener = std::net::TcpListener::bind(addr).with_context(|| format!("--listen {addr}"))?;
            listener.set_nonblocking(true)?;
            let (args, source, stop) = (args.clone(), source.clone(), stop_rx.clone());
            Some(tokio::spawn(async move { run_proxy(&args, source, listener, stop).await }))
        }
        None => None,
    };
    let templates = if args.templates.is_empty() {
        None
    } else {
        let mut jobs = Vec::new();
        for (n, spec) in args.templates.iter().enumerate() {
            let reloader: Option<Arc<dyn Reloader>> =
                spec.command.as_ref().map(|c| Arc::new(CommandReloader::new(c.clone(), Duration::from_secs(60))) as _);
            let (check, starter) = match &exec {
                Some((kind, bin)) if n == 0 => {
                    let (check, starter) = supervised(kind, bin.clone());
                    (args.check.clone().or(check), Some(starter))
                }
                _ => (args.check.clone(), None),
            };
            jobs.push((Job::new(spec.clone(), check, reloader), starter));
        }
        let env: EnvLookup = Arc::new(|k: &str| std::env::var(k).ok());
        let mut router = Router::new(source, jobs, Options { wait, domain: args.domain.clone() }, env);
        if args.once {
            return match router.once().await {
                Ok(()) => Ok(()),
                Err(errors) => bail!("{} template(s) failed:\n  {}", errors.len(), errors.join("\n  ")),
            };
        }
        if let Some(addr) = args.status {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--status {addr}"))?;
            tokio::spawn(shoal_router::status::serve(listener, router.status()));
        }
        eprintln!(
            "shoal router: {} template(s) from {http_addr}, wait {:?}..{:?}{}",
            args.templates.len(),
            wait.0,
            wait.1,
            args.status.map(|a| format!(", status http://{a}/v1/router/status")).unwrap_or_default()
        );
        let mut stop = stop_rx.clone();
        Some(tokio::spawn(router.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })))
    };
    shutdown().await;
    let _ = stop_tx.send(true);
    if let Some(t) = templates {
        let _ = t.await;
    }
    if let Some(p) = proxy {
        p.await??;
    }
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
