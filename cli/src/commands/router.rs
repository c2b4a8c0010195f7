//! `shoal router`: consul-template's job. Renders templates from the catalog of the node at
//! `--http-addr`, validates, installs and reloads them (see router/README.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_router::reload::haproxy::{HaproxyMaster, HaproxyOptions};
use shoal_router::reload::nginx::{NginxMaster, NginxOptions};
use shoal_router::reload::{CommandReloader, Reloader};
use shoal_router::runner::{EnvLookup, Options, Router, Starter};
use shoal_router::source::ApiSource;
use shoal_router::template::{Job, TemplateSpec};

use crate::client::ApiClient;

#[derive(clap::Args, Debug)]
pub struct RouterArgs {
    /// A template to keep rendered: SRC:DEST[:RELOAD_CMD] (repeatable). RELOAD_CMD runs with
    /// `sh -c` after each change, e.g. `systemctl reload haproxy`.
    #[arg(long = "template", value_name = "SRC:DEST[:RELOAD_CMD]", required = true)]
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
    if exec.is_some() && args.templates[0].command.is_some() {
        bail!("--exec supervises and reloads the proxy itself: drop the RELOAD_CMD of the first --template");
    }
    for t in &args.templates {
        if !t.source.exists() {
            bail!("--template {}: no such template file", t.source.display());
        }
    }
    let client = ApiClient::new(http_addr)?;
    let source = Arc::new(ApiSource::new(client));
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
        if exec.is_some() {
            bail!("--once renders and exits: it does not start a proxy (drop --exec)");
        }
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
    router.run(shutdown()).await;
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
