//! `shoal-bench`: side-by-side benchmarks. `kv` drives Shoal's Consul KV API and etcd's v3 JSON
//! gateway with the same workload, one after the other in one run, and prints ops/s, p50 and p99 for
//! each and the ratio Shoal/etcd. `swarm-compare` times container operations (service create,
//! scale, rm, a killed container's replacement) on this Docker engine through the engine API alone,
//! the engine's Swarm mode and a 3-node Shoal cluster. `catalog-scale` loads the Consul-compatible
//! catalog with 10,000 instances and measures the memory, the blocking-query fan-out of one check
//! flip to 1,000 watchers, and a sustained health-flip load against the Raft log. `dns` runs
//! dnsperf against Shoal's DNS server and against Knot serving the same records from a static zone,
//! with one query file in one run, and times how long a catalog change takes to show in DNS.

mod catalog_scale;
mod compare;
mod discovery_latency;
mod dns_bench;
mod engine;
mod load;
mod placement;
mod report;
mod service_create;
mod target;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::load::{Settings, Workload};
use crate::target::{Target, TargetSpec};

#[derive(Parser, Debug)]
#[command(
    name = "shoal-bench",
    version,
    about = "Benchmarks side by side: Shoal against etcd (KV), against Swarm and the engine (containers), and against Knot (DNS)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the KV workloads against every --target and print the comparison table.
    Kv(KvArgs),
    /// The pure scheduler alone: place --tasks tasks on --nodes simulated nodes (one core, no I/O).
    Placement(PlacementArgs),
    /// End to end: create a service of --replicas through --api and time until all are assigned.
    ServiceCreate(ServiceCreateArgs),
    /// Container operations timed side by side on this engine: the engine API alone (the floor),
    /// the engine's Swarm mode, and a 3-node Shoal cluster with --runtime docker.
    SwarmCompare(compare::CompareArgs),
    /// Discovery latency: from a `docker run` container's start to its instance passing in
    /// /v1/health/service, as a blocking-query client sees it (the node at --api must run
    /// --runtime docker on this engine).
    DiscoveryLatency(DiscoveryLatencyArgs),
    /// The catalog at scale on a running manager: 1,000 services × 10 instances through
    /// /v1/catalog/register, the manager's memory, the fan-out of a check flip to 1,000 blocking
    /// watchers, and a health-flip load with its Raft entries.
    CatalogScale(catalog_scale::CatalogScaleArgs),
    /// DNS: dnsperf against a one-node Shoal and against Knot serving the same records from a
    /// static zone (same query file, one run), at 100 and 10,000 instances; then how long a
    /// catalog change takes to show in DNS.
    Dns(dns_bench::DnsBenchArgs),
}

#[derive(Args, Debug)]
struct DiscoveryLatencyArgs {
    /// The node's HTTP API, e.g. http://127.0.0.1:8500.
    #[arg(long)]
    api: String,
    /// Containers started, one after the other.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// The image the containers run.
    #[arg(long, default_value = "shoal:local")]
    image: String,
    /// Give each container an HTTP health check (the first probe is then part of the time).
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
struct ServiceCreateArgs {
    /// A manager's HTTP API, e.g. http://127.0.0.1:8500.
    #[arg(long)]
    api: String,
    /// Replicas of the service.
    #[arg(long, default_value_t = 10_000)]
    replicas: u64,
    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct PlacementArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Tasks to place (over 10 services with constraints, reservations and spread).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Runs (the best and the median are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[derive(Args, Debug)]
struct KvArgs {
    /// A cluster to drive: SYSTEM:NODES=URL[,URL..] with SYSTEM `shoal` or `etcd`, NODES its size and
    /// the URLs the HTTP API of every node (Shoal `http://IP:8500`, etcd `http://IP:2379`). The
    /// leader is found among the URLs and every client talks to it. Repeat for each cluster.
    #[arg(long = "target", value_name = "SYSTEM:NODES=URLS", required = true)]
    targets: Vec<TargetSpec>,
    /// Workloads to run, in order: put1 (1 client, sequential puts), put64 (--clients concurrent
    /// clients putting), get64 (--clients concurrent clients doing linearizable reads).
    #[arg(long, value_delimiter = ',', default_value = "put1,put64,get64")]
    workloads: Vec<Workload>,
    /// Measured time of each workload on each cluster (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured run of the same workload before each measurement.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent clients (one HTTP/1.1 keep-alive connection each) of put64 and get64.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Number of distinct keys the workloads spread over.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Size of every value written, in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Upper bound on the requests one client makes in one measurement (the time bound usually ends
    /// it first).
    #[arg(long, default_value_t = 1_000_000)]
    max_ops_per_client: u64,
    /// Timeout of one request; a request that takes longer counts as an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    // The benchmark's flags take ms, s or m, and a bare number of seconds; the reading itself is
    // the workspace's one duration reader.
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    if !matches!(unit, "ms" | "s" | "m") {
        return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)"));
    }
    shoal_model::duration::parse(&format!("{num}{unit}"))
        .ok_or_else(|| format!("{s:?}: expected a duration such as 10s or 500ms"))
}

fn main() -> Result<()> {
    // reqwest is built with `rustls-no-provider` in this workspace: install the provider once,
    // before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    match cli.command {
        Cmd::Kv(args) => runtime.block_on(run_kv(args)),
        Cmd::SwarmCompare(args) => runtime.block_on(compare::run(args)),
        Cmd::DiscoveryLatency(args) => runtime.block_on(async {
            let api = args.api.trim_end_matches('/');
            let mut l = discovery_latency::run(api, args.rounds, &args.image, args.check).await?;
            let n = l.ms.len();
            let (p50, p99) =
                (discovery_latency::percentile(&mut l.ms, 50.0), discovery_latency::percentile(&mut l.ms, 99.0));
            let max = l.ms.last().copied().unwrap_or(f64::NAN);
            println!(
                "discovery latency ({} check), {n} starts: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
                if args.check { "HTTP" } else { "no" }
            );
            Ok(())
        }),
        Cmd::CatalogScale(args) => runtime.block_on(catalog_scale::run(args)),
        Cmd::Dns(args) => runtime.block_on(dns_bench::run(args)),
        Cmd::ServiceCreate(args) => runtime.block_on(async {
            let (secs, n) = service_create::run(args.api.trim_end_matches('/'), args.replicas, args.timeout).await?;
            println!(
                "service create of {} replicas: all {n} tasks assigned after {secs:.3} s ({:.0} tasks/s)",
                args.replicas,
                n as f64 / secs
            );
            Ok(())
        }),
        Cmd::Placement(args) => {
            let mut rates: Vec<f64> = Vec::new();
            for i in 0..args.runs.max(1) {
                let r = placement::run(args.nodes, args.tasks);
                let rate = r.placed as f64 / r.secs;
                println!(
                    "run {}: {} of {} tasks placed on {} nodes in {:.3} s = {:.0} placements/s",
                    i + 1,
                    r.placed,
                    r.tasks,
                    args.nodes,
                    r.secs,
                    rate
                );
                rates.push(rate);
            }
            rates.sort_by(f64::total_cmp);
            println!(
                "placements/s: median {:.0}, best {:.0} (goal: 50000 on one core)",
                rates[rates.len() / 2],
                rates[rates.len() - 1]
            );
            Ok(())
        }
    }
}

async fn run_kv(args: KvArgs) -> Result<()> {
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let settings = Settings {
        duration: args.duration,
        warmup: args.warmup,
        clients: args.clients,
        keys: args.keys,
        value_size: args.value_size,
        max_ops_per_client: args.max_ops_per_client,
        request_timeout: args.request_timeout,
    };
    eprintln!(
        "shoal-bench kv: {} targets, workloads {:?}, {:?} measured + {:?} warm-up each, {} clients, {} keys, {} B values",
        args.targets.len(),
        args.workloads.iter().map(|w| w.name(settings.clients)).collect::<Vec<_>>(),
        settings.duration,
        settings.warmup,
        settings.clients,
        settings.keys,
        settings.value_size,
    );

    let mut targets = Vec::new();
    for spec in &args.targets {
        let target = Target::connect(spec.clone()).await.with_context(|| format!("target {spec}"))?;
        eprintln!("{}: leader {} of {:?}", target.label(), target.leader, target.spec.urls);
        targets.push(target);
    }
    // Side by side: for every cluster size and workload, each system in turn.
    let mut sizes: Vec<usize> = targets.iter().map(|t| t.spec.nodes).collect();
    sizes.sort_unstable();
    sizes.dedup();

    for t in &targets {
        eprintln!("{}: writing the {} keys once", t.label(), settings.keys);
        load::preload(t, &settings).await.with_context(|| format!("preloading {}", t.label()))?;
    }
    let mut rows = Vec::new();
    for &size in &sizes {
        for &workload in &args.workloads {
            for t in targets.iter().filter(|t| t.spec.nodes == size) {
                let name = workload.name(settings.clients);
                eprintln!("{}: {name}: warm-up {:?}, then {:?}", t.label(), settings.warmup, settings.duration);
                let m = load::run(t, workload, &settings).await;
                eprintln!("{}: {name}: {}", t.label(), report::one_line(&m));
                rows.push(report::Row { system: t.spec.system, nodes: size, workload: name, m });
            }
        }
    }
    println!();
    print!("{}", report::table(&rows));
    println!();
    print!("{}", report::ratios(&rows));
    if let Some(goal) = report::goal(&rows, 3) {
        println!();
        print!("{goal}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
