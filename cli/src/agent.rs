//! `shoal agent` and `shoal dev`: run a node in the foreground.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_registry::datadir::{NodeIdentity, data_dir_in_use};
use shoal_registry::node::RunningNode;
use shoal_registry::{NodeConfig, StartMode};

/// Flags of `shoal agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Start the first manager of a new cluster.
    #[arg(long, conflicts_with_all = ["join", "token"])]
    pub init: bool,
    /// Join the cluster through this manager (IP[:PORT], port 2377 by default).
    #[arg(long, value_name = "IP[:PORT]", requires = "token")]
    pub join: Option<String>,
    /// Join token (`shoal join-token manager` prints it).
    #[arg(long, requires = "join")]
    pub token: Option<String>,
    /// Where this node keeps its Raft log, snapshots and identity.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Addresses, ports and timings shared by `agent` and `dev`.
#[derive(Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// Address to listen on (default 127.0.0.1, or the address stored in the data dir).
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Address other nodes reach this one at (default: the bind address).
    #[arg(long, value_name = "IP")]
    pub advertise: Option<IpAddr>,
    /// Node name (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Cluster RPC port (Raft, agent RPC).
    #[arg(long, value_name = "PORT")]
    pub cluster_port: Option<u16>,
    /// HTTP API port.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Docker Engine API port on managers (the `docker` CLI: DOCKER_HOST=tcp://IP:PORT); it
    /// listens where the HTTP API does. Off loopback it requires client certificates (`docker
    /// --tlsverify`, certificates from `shoal cert client`) and 2375 becomes 2376. 0 turns it off.
    #[arg(long, default_value_t = 2375, value_name = "PORT")]
    pub docker_port: u16,
    /// Gossip port (UDP; default 7946, or the port stored in the data dir).
    #[arg(long, value_name = "PORT")]
    pub gossip_port: Option<u16>,
    /// How often this node gossips, in milliseconds.
    #[arg(long, default_value_t = 250, value_name = "MS")]
    pub gossip_interval_ms: u64,
    /// The leader marks a node down when nothing was heard from it for this long (e.g. 5s, 1500ms).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub down_window: String,
    /// The leader removes the registered containers and agent services of a node down this long
    /// (their health is critical from the moment the node is down; Consul's
    /// deregister_critical_service_after).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub deregister_critical_after: String,
    /// Address the HTTP API listens on (default: the bind address when it is loopback, else
    /// 127.0.0.1). Any other address needs --http-token.
    #[arg(long, value_name = "IP")]
    pub http_bind: Option<IpAddr>,
    /// Require this token on every HTTP API request (clients send it as X-Consul-Token).
    #[arg(long, env = "SHOAL_HTTP_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// Serve the HTTP API over mutual TLS: clients must present a certificate from the cluster CA
    /// (`shoal cert client --out DIR`, then `SHOAL_TLS_DIR=DIR shoal ...`).
    #[arg(long)]
    pub http_tls: bool,
    /// Leader heartbeat interval in milliseconds.
    /// (openraft also uses it as the timeout of every AppendEntries, so it must cover a follower's
    /// fsync on a busy machine.)
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub heartbeat_ms: u64,
    /// Election timeout range in milliseconds, MIN-MAX: raise it on slow networks.
    #[arg(long, default_value = "300-600", value_name = "MIN-MAX")]
    pub election_timeout_ms: String,
    /// Build a snapshot and compact the Raft log after this many entries.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub snapshot_threshold: u64,
    /// Log entries kept behind a snapshot for lagging followers.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub keep_logs: u64,
    /// Validity of the node certificates this manager issues, e.g. 2160h (90 days, the default), 30d,
    /// 45s; nodes renew theirs after two thirds of it.
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    pub cert_expiry: String,
    /// UNSAFE, for tests only: never fsync the Raft log (acknowledged writes are lost on a crash).
    #[arg(long, hide = true)]
    pub unsafe_no_fsync: bool,
    /// Container runtime for this node's tasks: `docker` (the local engine), `none` (run nothing),
    /// or `fake` (test-only: containers run in memory, images named `fail…` exit with code 1).
    #[arg(long, value_enum, default_value_t = crate::runtime::RuntimeKind::Docker)]
    pub runtime: crate::runtime::RuntimeKind,
    /// Do not register the containers on this engine that Shoal did not start (`docker run -l
    /// shoal.service=NAME`); the node's tasks are registered anyway. For nodes that share an engine
    /// with a node that registers them.
    #[arg(long)]
    pub no_register_containers: bool,
    /// How long a task's container keeps running after its instance left the catalog, before it
    /// is stopped: routers and DNS caches stop sending it new requests in that time (0s: none).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pub drain_delay: String,
    #[command(flatten)]
    pub dns: crate::dns::DnsArgs,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "shoal".into())
}

fn port_of(addr: &str) -> Option<u16> {
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

fn parse_range(s: &str) -> Result<(Duration, Duration)> {
    let (a, b) =
        s.split_once('-').with_context(|| format!("--election-timeout-ms {s:?}: expected MIN-MAX, e.g. 250-500"))?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    if a == 0 || b <= a {
        bail!("--election-timeout-ms {s:?}: MIN must be > 0 and MAX greater than MIN");
    }
    Ok((Duration::from_millis(a), Duration::from_millis(b)))
}

fn parse_expiry(s: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("--cert-expiry {s:?}: use a number with a unit: 90d, 2160h, 30m, 45s (at least 10s)");
    match shoal_model::duration::parse(s) {
        Some(d) if d >= Duration::from_secs(10) => Ok(d),
        _ => Err(bad()),
    }
}

fn parse_window(s: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("--down-window {s:?}: use a duration such as 5s or 1500ms (at least 500ms)");
    match shoal_model::duration::parse(s) {
        Some(d) if d >= Duration::from_millis(500) => Ok(d),
        _ => Err(bad()),
    }
}

fn config(data_dir: PathBuf, net: &NetArgs) -> Result<NodeConfig> {
    let stored = NodeIdentity::load(&data_dir).map_err(anyhow::Error::new)?;
    let defaults = NodeConfig::default();
    let bind = net.bind.or(stored.as_ref().map(|s| s.bind_ip)).unwrap_or(defaults.bind_ip);
    let election_timeout = parse_range(&net.election_timeout_ms)?;
    if net.heartbeat_ms == 0 || net.heartbeat_ms * 2 >= election_timeout.0.as_millis() as u64 {
        bail!("--heartbeat-ms must be above 0 and well below the election timeout (at most half of its minimum)");
    }
    Ok(NodeConfig {
        data_dir,
        name: net.name.clone().unwrap_or_else(hostname),
        bind_ip: bind,
        advertise_ip: net.advertise.unwrap_or(if bind.is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { bind }),
        cluster_port: net
            .cluster_port
            .or(stored.as_ref().and_then(|s| port_of(&s.cluster_addr)))
            .unwrap_or(defaults.cluster_port),
        http_port: net.http_port.or(stored.as_ref().and_then(|s| port_of(&s.http_addr))).unwrap_or(defaults.http_port),
        gossip_port: net
            .gossip_port
            .or(stored.as_ref().and_then(|s| port_of(&s.gossip_addr)))
            .unwrap_or(defaults.gossip_port),
        gossip_interval: Duration::from_millis(net.gossip_interval_ms.clamp(10, 10_000)),
        down_window: parse_window(&net.down_window)?,
        deregister_critical_after: shoal_model::duration::parse(&net.deregister_critical_after).ok_or_else(|| {
            anyhow::anyhow!(
                "--deregister-critical-after {:?}: use a duration such as 5m or 90s",
                net.deregister_critical_after
            )
        })?,
        heartbeat: Duration::from_millis(net.heartbeat_ms),
        election_timeout,
        snapshot_threshold: net.snapshot_threshold.max(1),
        keep_logs: net.keep_logs,
        unsafe_no_fsync: net.unsafe_no_fsync,
        cert_validity: parse_expiry(&net.cert_expiry)?,
        ..defaults
    })
}

/// Runs a node until SIGINT/SIGTERM.
pub async fn run_agent(args: AgentArgs) -> Result<()> {
    let mode = match (args.init, args.join.clone(), args.token.clone()) {
        (true, _, _) => StartMode::Init,
        (false, Some(addr), Some(token)) => StartMode::Join { addr, token },
        _ => StartMode::Resume,
    };
    let http = http_listen(&args.net)?;
    let config = config(args.data_dir, &args.net)?;
    run(config, mode, http, runtime_of(&args.net)?, args.net.docker_port, &args.net.dns).await
}

/// Where the HTTP API listens and which token it requires.
struct HttpListen {
    bind: Option<IpAddr>,
    token: Option<String>,
    tls: bool,
}

fn http_listen(net: &NetArgs) -> Result<HttpListen> {
    let token = net.http_token.clone().filter(|t| !t.is_empty());
    if let Some(ip) = net.http_bind
        && !ip.is_loopback()
        && token.is_none()
        && !net.http_tls
    {
        bail!(
            "the HTTP API would listen on {ip}, which is not a loopback address: require client certificates with --http-tls (clients get one with `shoal cert client --out DIR`), or set a token with --http-token or SHOAL_HTTP_TOKEN (clients send it as X-Consul-Token), or keep the API on loopback"
        );
    }
    Ok(HttpListen { bind: net.http_bind, token, tls: net.http_tls })
}

/// Flags of `shoal dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Data dir of the dev cluster (kept between runs).
    #[arg(long, value_name = "DIR", env = "SHOAL_DEV_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `shoal dev`: a single-node cluster on this host, created on first run and resumed after.
pub async fn run_dev(args: DevArgs) -> Result<()> {
    let dir = args.data_dir.unwrap_or_else(|| {
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("shoal/dev")
    });
    let mode = if data_dir_in_use(&dir) { StartMode::Resume } else { StartMode::Init };
    let http = http_listen(&args.net)?;
    let config = config(dir, &args.net)?;
    run(config, mode, http, runtime_of(&args.net)?, args.net.docker_port, &args.net.dns).await
}

async fn run(
    config: NodeConfig,
    mode: StartMode,
    http: HttpListen,
    (runtime, register_containers, drain): (crate::runtime::RuntimeKind, bool, std::time::Duration),
    docker_port: u16,
    dns_args: &crate::dns::DnsArgs,
) -> Result<()> {
    if matches!(mode, StartMode::Init | StartMode::Join { .. }) && data_dir_in_use(&config.data_dir) {
        bail!(
            "data dir {dir} already holds a node; restart it with `shoal agent --data-dir {dir}` (without --init/--join), or choose an empty directory",
            dir = config.data_dir.display()
        );
    }
    if matches!(mode, StartMode::Resume) && !data_dir_in_use(&config.data_dir) {
        bail!(
            "data dir {} holds no node; start a new cluster with --init, or join one with --join ADDR --token TOKEN",
            config.data_dir.display()
        );
    }
    // The API stays on loopback unless the operator chose otherwise (and then it needs a token).
    let http_ip =
        http.bind.unwrap_or(if config.bind_ip.is_loopback() { config.bind_ip } else { IpAddr::from([127, 0, 0, 1]) });
    let http_addr = SocketAddr::new(http_ip, config.http_port);
    let http_token = http.token.clone();
    // Bind the API first so a port clash is reported before the node joins anything.
    let http_listener = tokio::net::TcpListener::bind(http_addr).await.with_context(|| {
        format!("cannot listen on {http_addr} for the HTTP API (is another node using it? pick --bind or --http-port)")
    })?;
    let what = match &mode {
        StartMode::Init => "initialising a new cluster",
        StartMode::Join { .. } => "joining the cluster",
        StartMode::Resume => "resuming",
    };
    tracing::info!(data_dir = %config.data_dir.display(), "{what}");
    let data_dir = config.data_dir.clone();
    let config_for_promotion = config.clone();
    match shoal_agent::docker::engine_version().await {
        Some(v) => shoal_registry::host::set_engine_version(v),
        None => tracing::warn!("no Docker engine answered on its socket; the node table shows no engine version"),
    }
    let gossip_config = config.clone();
    let mut node = shoal_registry::node::start(config, mode).await.map_err(anyhow::Error::new)?;
    let gossip = crate::gossip::start(&gossip_config, &node).await?;
    if let RunningNode::Manager(m) = &node {
        m.set_heard(std::sync::Arc::new(crate::gossip::GossipHeard(gossip.clone())));
        tokio::spawn(shoal_scheduler::leader::run(m.clone()));
    }
    // DNS is bound once the node is in the cluster (a refused join never touches its port).
    let dns = crate::dns::start(dns_args, gossip_config.bind_ip).await?;
    let dns_handle = dns.as_ref().map(|d| d.handle.clone());
    // Task containers resolve through the node's DNS, on their networks' gateways.
    let resolver = match &dns_handle {
        Some(h) => crate::dns::ContainerDns::new(dns_args, h.clone())?
            .map(|r| std::sync::Arc::new(r) as std::sync::Arc<dyn shoal_agent::docker::resolver::ContainerResolver>),
        None => None,
    };
    let executor =
        crate::runtime::executor(runtime, &node, gossip_config.bind_ip, register_containers, resolver, drain).await?;
    let dns_note = dns.as_ref().map_or_else(String::new, |d| format!(" · DNS {}", d.addr));
    // One log source for the life of the process, whatever role the node plays.
    let logs = std::sync::Arc::new(shoal_registry::control::logs::LogSource::default());
    logs.set_token(http_token.clone());
    let mut runner = crate::runtime::start(&executor, &node, &logs, &dns_handle);
    // Off loopback the Docker API speaks TLS, on Docker's TLS port unless one was chosen.
    let docker_port = if !http_ip.is_loopback() && docker_port == 2375 { 2376 } else { docker_port };
    let docker_addr = SocketAddr::new(http_ip, docker_port);
    let start_docker_api = |node: &RunningNode| -> Option<tokio::task::JoinHandle<()>> {
        let RunningNode::Manager(m) = node else { return None };
        if docker_port == 0 {
            return None;
        }
        let state = shoal_api::ApiState { manager: m.clone(), logs: logs.clone() };
        Some(tokio::spawn(async move {
            match tokio::net::TcpListener::bind(docker_addr).await {
                Ok(l) => {
                    if let Err(e) = shoal_api::docker::serve(state, l).await {
                        tracing::error!(error = %e, "the Docker API stopped");
                    }
                }
                Err(e) => {
                    tracing::error!(addr = %docker_addr, error = %e, "cannot listen for the Docker API (pick --docker-port, or 0 to turn it off)")
                }
            }
        }))
    };
    let mut docker_api = start_docker_api(&node);
    let mut next_listener = Some(http_listener);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let listener = next_listener.take().expect("a listener for each run");
        let mut api = match &node {
            RunningNode::Manager(manager) => {
                eprintln!(
                    "shoal manager {:016x} ({}) is up: cluster {} · HTTP API http://{}{dns_note} · data {}",
                    manager.id,
                    manager.node.name,
                    manager.node.cluster_addr,
                    http_addr,
                    data_dir.display()
                );
                let state = shoal_api::ApiState { manager: manager.clone(), logs: logs.clone() };
                if http.tls {
                    tokio::spawn(shoal_api::serve_tls(state, listener, http_token.clone()))
                } else {
                    tokio::spawn(shoal_api::serve(state, listener, http_token.clone()))
                }
            }
            RunningNode::Worker(worker) => {
                eprintln!(
                    "shoal worker {:016x} ({}) is up: reporting to the managers{dns_note} · data {}",
                    worker.id,
                    worker.identity.name,
                    data_dir.display()
                );
                tokio::spawn(shoal_api::worker::serve(worker.clone(), logs.clone(), listener, http.tls))
            }
        };
        let worker = match &node {
            RunningNode::Worker(w) => Some(w.clone()),
            RunningNode::Manager(_) => None,
        };
        // The node cannot go on (removed from the cluster, or its certificate expired): exit
        // non-zero with the reason, which says what to do.
        let refused = {
            let node = node.clone();
            async move { node.stopped().await }
        };
        let promoted = async {
            match &worker {
                Some(w) => w.promoted().await,
                None => std::future::pending().await,
            }
        };
        let manager = match &node {
            RunningNode::Manager(m) => Some(m.clone()),
            RunningNode::Worker(_) => None,
        };
        let demoted = async {
            match &manager {
                Some(m) => m.demoted().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            res = &mut api => { res??; break }
            reason = refused => bail!("{reason}"),
            (cert, via) = promoted => {
                // Promotion: the worker's API gives way to a manager on the same port.
                api.abort();
                let _ = api.await;
                let manager = shoal_registry::node::become_manager(config_for_promotion.clone(), cert, via)
                    .await
                    .map_err(anyhow::Error::new)?;
                manager.set_heard(std::sync::Arc::new(crate::gossip::GossipHeard(gossip.clone())));
                tokio::spawn(shoal_scheduler::leader::run(manager.clone()));
                gossip.set(shoal_gossip::keys::ROLE, "manager").await;
                node = RunningNode::Manager(manager);
                docker_api = start_docker_api(&node);
                if let Some(r) = runner.take() { r.abort(); }
                runner = crate::runtime::start(&executor, &node, &logs, &dns_handle);
                let rebound = tokio::net::TcpListener::bind(http_addr)
                    .await
                    .with_context(|| format!("cannot listen on {http_addr} for the HTTP API after the promotion"))?;
                next_listener = Some(rebound);
            }
            _ = demoted => {
                // Demotion: let the answer to the demote request (this node may be serving it) go
                // out, then the manager's API gives way to a worker's on the same port.
                tokio::time::sleep(Duration::from_millis(300)).await;
                api.abort();
                let _ = api.await;
                let manager = manager.clone().expect("a demoted manager");
                let worker = shoal_registry::node::become_worker(config_for_promotion.clone(), manager)
                    .await
                    .map_err(anyhow::Error::new)?;
                gossip.set(shoal_gossip::keys::ROLE, "worker").await;
                node = RunningNode::Worker(worker);
                if let Some(d) = docker_api.take() { d.abort(); }
                if let Some(r) = runner.take() { r.abort(); }
                runner = crate::runtime::start(&executor, &node, &logs, &dns_handle);
                let rebound = tokio::net::TcpListener::bind(http_addr)
                    .await
                    .with_context(|| format!("cannot listen on {http_addr} for the HTTP API after the demotion"))?;
                next_listener = Some(rebound);
            }
        }
    }
    tracing::info!("shutting down");
    gossip.shutdown().await;
    if let RunningNode::Manager(manager) = node {
        manager.shutdown().await;
    }
    Ok(())
}

/// The runtime flags: `--runtime`, whether to register other containers, `--drain-delay`.
fn runtime_of(net: &NetArgs) -> Result<(crate::runtime::RuntimeKind, bool, std::time::Duration)> {
    let drain = shoal_model::duration::parse(&net.drain_delay)
        .ok_or_else(|| anyhow::anyhow!("--drain-delay {:?}: not a duration (e.g. 1s, 500ms, 0s)", net.drain_delay))?;
    Ok((net.runtime, !net.no_register_containers, drain))
}
