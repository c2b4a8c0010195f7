//! `shoal-bench catalog-scale`: the Consul-compatible catalog at the size of a real estate, against
//! one running manager:
//!
//! ```text
//!   1. load     PUT /v1/catalog/register × services·instances (64 in flight)    → time, writes/s
//!   2. memory   VmRSS of --pid before, halfway through and after the load       → bytes per instance
//!               (whole load, and the second half alone: the cost of one more instance)
//!   3. fan-out  W watchers parked on /v1/health/service/svc-0000?index=N, then one
//!               check flip                                                        → t0 → each answer
//!   4. flips    re-registrations with another Status at --flip-rate for --flip-seconds
//!                                                                                 → flips/s, Raft entries/s
//! ```
//!
//! Every figure comes from the HTTP API a Consul client uses; the Raft counters from
//! `/v1/agent/raft`. The catalog is synthetic but shaped like a real one: external nodes with meta,
//! instances with tags, meta, their own address and port, and one check each.

mod fanout;
mod flips;
pub(crate) mod load;
pub(crate) mod probe;
pub(crate) mod report;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use crate::load::Measurement;
use load::load;
use probe::Probe;
use report::{fanout_table, flip_rows, verdict};

/// Flags of `shoal-bench catalog-scale`.
#[derive(Args, Debug)]
pub struct CatalogScaleArgs {
    /// The manager's HTTP API (the leader of a one-node cluster), e.g. http://127.0.0.1:8500.
    #[arg(long)]
    api: String,
    /// PID of that manager's process, for its RSS; without it the memory rows are left out.
    #[arg(long)]
    pid: Option<u32>,
    /// Services to register (`svc-0000`, ...).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Instances of every service.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Simulated external nodes (`sim-000`, ...) the instances are spread over.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Registrations in flight during the load (one keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Concurrent blocking watchers of `svc-0000` (one HTTP/1.1 connection each).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Fan-out rounds (one check flip each, critical and passing in turn).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// `?wait=` of every watcher: far longer than a round, so no watcher returns on its own.
    #[arg(long, default_value = "60s", value_parser = crate::parse_duration)]
    watch_wait: Duration,
    /// Pause after every watcher's connection is up, so that all requests are parked in the server
    /// before the flip (not still in its accept queue or its parser).
    #[arg(long, default_value = "1500ms", value_parser = crate::parse_duration)]
    park: Duration,
    /// Bound on one round: watchers still waiting this long after the flip count as not answered.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    answer_timeout: Duration,
    /// Seconds of the health-flip load.
    #[arg(long, default_value_t = 10.0)]
    flip_seconds: f64,
    /// Target check flips per second during the flip load.
    #[arg(long, default_value_t = 1000.0)]
    flip_rate: f64,
    /// Concurrent flip clients (each paced, each owning its own share of the instances).
    #[arg(long, default_value_t = 32)]
    flip_clients: usize,
    /// Bound on the load phase.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    load_timeout: Duration,
    /// Timeout of one registration or flip request.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    request_timeout: Duration,
}

/// The synthetic catalog: instance `k` (0-based) is instance `k % instances` of service
/// `k / instances`, on node `k % nodes`, so one service's instances sit on distinct nodes and every
/// node carries the same number of instances.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub(crate) services: usize,
    pub(crate) instances: usize,
    pub(crate) nodes: usize,
}

/// The first instance port; instance `k` listens on `BASE_PORT + k`, so every port is distinct.
pub(crate) const BASE_PORT: usize = 20_000;

impl Layout {
    pub(crate) fn total(&self) -> usize {
        self.services * self.instances
    }

    pub(crate) fn service(&self, k: usize) -> String {
        format!("svc-{:04}", k / self.instances)
    }

    pub(crate) fn instance_id(&self, k: usize) -> String {
        format!("svc-{:04}-{}", k / self.instances, k % self.instances)
    }

    pub(crate) fn node_name(&self, k: usize) -> String {
        format!("sim-{:03}", k % self.nodes)
    }

    /// 10.0.0.1 for node 0, then on through 10.x.y.z.
    pub(crate) fn node_addr(&self, k: usize) -> String {
        let n = k % self.nodes + 1;
        format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
    }

    /// The body of `PUT /v1/catalog/register` for instance `k` with its check at `status`. The
    /// same body with another status is a status-only change (the node and instance are unchanged).
    pub(crate) fn register_body(&self, k: usize, status: &str) -> Vec<u8> {
        let (node, id) = (self.node_name(k), self.instance_id(k));
        let body = json!({
            "Node": node,
            "Address": self.node_addr(k),
            "NodeMeta": {"rack": format!("r{}", k % self.nodes % 10), "bench": "catalog-scale"},
            "Service": {
                "ID": id,
                "Service": self.service(k),
                "Tags": ["bench", format!("v{}", k % 3)],
                "Address": self.node_addr(k),
                "Port": BASE_PORT + k,
                "Meta": {"version": "1.0.0"},
            },
            "Check": {"CheckID": format!("{id}:alive"), "Name": "alive", "Status": status, "ServiceID": id},
        });
        serde_json::to_vec(&body).expect("a JSON value serialises")
    }
}

/// A client with one keep-alive connection per concurrent request.
pub(crate) fn http_client(timeout: Duration, idle_per_host: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(idle_per_host)
        .timeout(timeout)
        .build()?)
}

/// Raises this process's open-file limit to its hard limit: every watcher holds a socket.
fn raise_fd_limit(needed: usize) -> Result<()> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    if (lim.rlim_cur as usize) < needed {
        bail!("{needed} sockets are needed but the open-file limit is {} (raise `ulimit -Hn`)", lim.rlim_cur);
    }
    Ok(())
}

/// Reads of the watched service timed alone, before the rounds.
const READS: usize = 200;

/// Runs the four phases and prints the tables.
pub async fn run(args: CatalogScaleArgs) -> Result<()> {
    let api = args.api.trim_end_matches('/').to_string();
    let layout = Layout { services: args.services, instances: args.instances, nodes: args.nodes };
    if layout.services == 0 || layout.instances == 0 || layout.nodes == 0 {
        bail!("--services, --instances and --nodes must be at least 1");
    }
    if BASE_PORT + layout.total() > usize::from(u16::MAX) {
        bail!("at most {} instances (one distinct port each)", usize::from(u16::MAX) - BASE_PORT);
    }
    raise_fd_limit(args.watchers + args.concurrency + args.flip_clients + 64)?;
    let probe = Probe::new(&api, args.pid)?;
    let raft0 = probe.raft().await.context("GET /v1/agent/raft (is --api a running manager?)")?;
    if raft0.state != "Leader" {
        bail!("{api} is {}, not the leader: point --api at the leader", raft0.state);
    }
    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut row = |phase: &str, figure: &str, value: String| rows.push([phase.into(), figure.into(), value]);

    // 1 and 2: the load, with the RSS around it.
    let rss0 = probe.rss_kib()?;
    eprintln!(
        "catalog-scale: registering {} instances of {} services on {} nodes",
        layout.total(),
        layout.services,
        layout.nodes
    );
    let deadline = Instant::now() + args.load_timeout;
    let half = layout.total() / 2;
    let first = load(&api, layout, 0..half, args.concurrency, args.request_timeout, deadline).await;
    let rss_half = probe.rss_kib()?;
    let second = load(&api, layout, half..layout.total(), args.concurrency, args.request_timeout, deadline).await;
    let m = first.combine(second);
    let raft1 = probe.raft().await?;
    let rss1 = probe.rss_kib()?;
    if m.errors > 0 || m.ok as usize != layout.total() {
        bail!("load: {} of {} registered, {} errors (first: {:?})", m.ok, layout.total(), m.errors, m.first_error);
    }
    probe.check_loaded(layout).await?;
    let load_entries = raft1.last_log_index - raft0.last_log_index;
    row("load", "registrations (ok / errors)", format!("{} / {}", m.ok, m.errors));
    row("load", "in flight", args.concurrency.to_string());
    row("load", "time", format!("{:.2} s", m.elapsed.as_secs_f64()));
    row("load", "writes/s", format!("{:.0}", m.ops_per_sec()));
    row(
        "load",
        "latency p50 / p99 / max",
        format!("{:.2} / {:.2} / {:.2} ms", m.percentile_ms(0.5), m.percentile_ms(0.99), m.max_ms()),
    );
    row(
        "load",
        "Raft entries (writes per entry)",
        format!("{load_entries} ({:.1})", m.ok as f64 / load_entries.max(1) as f64),
    );
    if let (Some(before), Some(mid), Some(after)) = (rss0, rss_half, rss1) {
        let per = (after as f64 - before as f64) * 1024.0 / layout.total() as f64;
        let marginal = (after as f64 - mid as f64) * 1024.0 / (layout.total() - half).max(1) as f64;
        row("memory", "manager VmRSS before / halfway / after", format!("{before} / {mid} / {after} KiB"));
        row("memory", "bytes per instance, whole load (goal < 1024)", format!("{per:.0} ({})", verdict(per < 1024.0)));
        row(
            "memory",
            "bytes per instance, second half only (goal < 1024)",
            format!("{marginal:.0} ({})", verdict(marginal < 1024.0)),
        );
    }
    if let Some(own) = probe::own_rss_kib() {
        row("memory", "shoal-bench's own VmRSS (not included)", format!("{own} KiB"));
    }

    // 3: the watch fan-out, and what one answer costs alone to explain it.
    let mut rounds_table = String::new();
    if args.rounds > 0 {
        let cost = fanout::read_cost(&probe, layout, READS).await?;
        let ms = |m: &Measurement| format!("{:.2} / {:.2} ms", m.percentile_ms(0.5), m.percentile_ms(0.99));
        row("fan-out", &format!("one read of svc-0000 alone, p50 / p99 ({READS} in a row)"), ms(&cost.default));
        row("fan-out", "the same with ?stale", ms(&cost.stale));
        if let Some(cpu) = cost.manager_cpu_ms_per_read {
            row("fan-out", "manager CPU per ?stale read", format!("{cpu:.3} ms"));
        }
        let watch = fanout::Settings {
            watchers: args.watchers,
            wait: args.watch_wait,
            park: args.park,
            answer_timeout: args.answer_timeout,
            request_timeout: args.request_timeout,
        };
        let rounds = fanout::run(&probe, layout, &watch, args.rounds).await?;
        rounds_table = fanout_table(&rounds);
        let all = fanout::overall(&rounds);
        let answered: usize = rounds.iter().map(fanout::Round::answered).sum();
        let asked = rounds.len() * args.watchers;
        row("fan-out", "watchers × rounds", format!("{} × {}", args.watchers, rounds.len()));
        row("fan-out", "answered", format!("{answered}/{asked}"));
        row(
            "fan-out",
            "t0 → answer p50 / p99 / max",
            format!("{:.1} / {:.1} / {:.1} ms", all.percentile_ms(0.5), all.percentile_ms(0.99), all.max_ms()),
        );
        let worst_p99 = rounds.iter().map(|r| r.lat.percentile_ms(0.99)).fold(0.0, f64::max);
        row(
            "fan-out",
            "goal: all answered, p99 ≤ 100 ms in every round",
            format!("worst round p99 {worst_p99:.1} ms ({})", verdict(answered == asked && worst_p99 <= 100.0)),
        );
    }

    // 4: the health-flip load.
    let flip = flips::Settings {
        seconds: args.flip_seconds,
        rate: args.flip_rate,
        clients: args.flip_clients,
        request_timeout: args.request_timeout,
    };
    if flip.seconds > 0.0 {
        let f = flips::run(&probe, layout, &flip).await?;
        flip_rows(&mut row, &f, &args);
    }
    if let Some(kib) = probe.rss_kib()? {
        row("memory", "manager VmRSS at the end", format!("{kib} KiB"));
    }

    println!();
    println!("| phase | figure | value |");
    println!("|---|---|---|");
    for [p, f, v] in &rows {
        println!("| {p} | {f} | {v} |");
    }
    println!();
    print!("{rounds_table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_spreads_a_service_over_distinct_nodes_and_ports() {
        let l = Layout { services: 1000, instances: 10, nodes: 100 };
        assert_eq!(l.total(), 10_000);
        assert_eq!(
            (l.service(0), l.instance_id(0), l.node_name(0)),
            ("svc-0000".into(), "svc-0000-0".into(), "sim-000".into())
        );
        assert_eq!(
            (l.service(9999), l.instance_id(9999), l.node_name(9999)),
            ("svc-0999".into(), "svc-0999-9".into(), "sim-099".into())
        );
        let nodes: std::collections::BTreeSet<String> = (0..10).map(|k| l.node_name(k)).collect();
        assert_eq!(nodes.len(), 10, "svc-0000's instances are on 10 nodes");
        assert_eq!(l.node_addr(0), "10.0.0.1");
        assert_eq!(l.node_addr(99), "10.0.0.100");
        assert_eq!(Layout { services: 1, instances: 1, nodes: 300 }.node_addr(299), "10.0.1.44");
        let v: serde_json::Value = serde_json::from_slice(&l.register_body(12, "critical")).unwrap();
        assert_eq!(v["Service"]["Port"], 20_012);
        assert_eq!(v["Check"]["Status"], "critical");
        assert_eq!(v["Check"]["ServiceID"], "svc-0001-2");
    }
}
