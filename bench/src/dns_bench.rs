//! `shoal-bench dns`: Shoal's DNS server against an authoritative reference serving the same
//! records from a static zone (Debian's Knot DNS), driven by Debian's dnsperf with one query file,
//! in one run:
//!
//! ```text
//!   catalog ── PUT /v1/catalog/register (catalog-scale's layout) ──▶ shoal agent, 127.A.B.1
//!                                                                     (one node, --runtime none)
//!   the same records as a zone file ─────────────────────────────────▶ knotd, 127.A.B.2
//!   client::compare: every query of the file asked of both; the answers must be equal
//!   per size: dnsperf -l D -e -v, max rate    ──▶ shoal, then knot    → queries/s, p50/p99
//!             dnsperf -Q R -e -v, fixed rate  ──▶ shoal, then knot    → latency at equal load
//!   per size: shoal_dns::answer() in this process on a copy of the snapshot → its own cost
//!   at the largest size: 100 check flips, each timed from the HTTP write to the first UDP
//!   answer that shows it                                              → p50/p99
//! ```
//!
//! The catalog grows from one size to the next (`--sizes 10,1000` × `--instances 10`: 100, then
//! 10,000 instances); Knot is restarted with each size's zone. Every process the bench starts is
//! stopped by PID when it ends, on an error or a ctrl-c too.

mod changes;
mod client;
mod dnsperf;
mod inproc;
mod knot;
mod report;
mod zone;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::task::block_in_place;
use tokio::time::Instant;

use crate::catalog_scale::Layout;
use crate::catalog_scale::load::load;
use crate::compare::shoal::ShoalCluster;
use client::Normal;
use knot::Knot;
use report::{Load, Row};
use zone::{Kind, Question};

/// Flags of `shoal-bench dns`.
#[derive(Args, Debug)]
pub struct DnsBenchArgs {
    /// The `shoal` binary of the node the bench starts (default target/release/shoal if it
    /// exists, else target/debug/shoal).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// Shoal listens on 127.A.B.1 (DNS on port 8600), Knot on 127.A.B.2 (given as A.B).
    #[arg(long, default_value = "0.77", value_parser = crate::compare::parse_block)]
    ips: [u8; 2],
    /// Drive a running one-node cluster instead of starting one: its HTTP API, e.g.
    /// http://127.0.0.1:8500 (then --dns is needed too).
    #[arg(long, requires = "dns")]
    api: Option<String>,
    /// That node's DNS server, IP:PORT.
    #[arg(long, requires = "api")]
    dns: Option<SocketAddr>,
    /// That node's PID, for its CPU time per query.
    #[arg(long, requires = "api")]
    pid: Option<u32>,
    /// Knot's port on 127.A.B.2.
    #[arg(long, default_value_t = 8600)]
    knot_port: u16,
    /// The knotd binary (Debian's `knot` package).
    #[arg(long, default_value = "knotd")]
    knotd: PathBuf,
    /// knotd's `udp-workers` (default: Knot's own, one per CPU).
    #[arg(long)]
    knot_udp_workers: Option<usize>,
    /// The dnsperf binary (Debian's `dnsperf` package).
    #[arg(long, default_value = "dnsperf")]
    dnsperf: String,
    /// Catalog sizes compared, in services of --instances instances each, smallest first; the
    /// catalog grows from one to the next, and the change latency is measured at the largest.
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    sizes: Vec<usize>,
    /// Instances per service (each on its own node: at most --nodes).
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// External nodes the instances are spread over (`sim-000`, ...).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Registrations in flight while the catalog is loaded.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Each measured dnsperf run (`-l`).
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// An unmeasured dnsperf run against each server before its first measured one at a size.
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    warmup: Duration,
    /// dnsperf `-c`: clients (one socket each).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// dnsperf `-T`: threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// dnsperf `-q`: queries in flight at most.
    #[arg(long, default_value_t = 100)]
    outstanding: usize,
    /// Queries/s of the fixed-rate runs, the same for both servers (default: half the slower
    /// server's max-rate figure at that size); 0 skips them.
    #[arg(long)]
    rate: Option<f64>,
    /// dnsperf without -v: no per-answer lines, so no percentiles (shows what printing costs it).
    #[arg(long)]
    no_verbose: bool,
    /// How long `shoal_dns::answer()` is timed in this process at each size; 0 skips it.
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    answer_time: Duration,
    /// Catalog changes timed from the HTTP write to DNS; 0 skips them.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// How often the change poller asks the node's DNS.
    #[arg(long, default_value = "1ms", value_parser = crate::parse_duration)]
    poll_interval: Duration,
    /// Bound on one change: not in DNS by then fails the run.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    change_timeout: Duration,
    /// Bound on loading one size's catalog.
    #[arg(long, default_value = "300s", value_parser = crate::parse_duration)]
    load_timeout: Duration,
    /// Timeout of one HTTP request.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    request_timeout: Duration,
}

/// The node under test.
struct Shoal {
    api: String,
    dns: SocketAddr,
    pid: Option<u32>,
    /// The node the bench started, stopped when this is dropped.
    _cluster: Option<ShoalCluster>,
}

/// The DNS port of `shoal agent` (its default `--dns-port`).
const SHOAL_DNS_PORT: u16 = 8600;

/// Runs the benchmark and prints the tables; stops what it started also on ctrl-c or SIGTERM.
pub async fn run(args: DnsBenchArgs) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = bench(&args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    }
}

async fn bench(args: &DnsBenchArgs) -> Result<()> {
    let mut sizes = args.sizes.clone();
    sizes.retain(|&s| s > 0);
    // The catalog only grows (nothing is deregistered between sizes): smallest first.
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || args.instances == 0 || args.nodes == 0 {
        bail!("--sizes, --instances and --nodes must be at least 1");
    }
    if args.instances > args.nodes {
        bail!("--instances {} > --nodes {}: a service's instances need distinct nodes", args.instances, args.nodes);
    }
    let largest = *sizes.iter().max().expect("not empty");
    if crate::catalog_scale::BASE_PORT + largest * args.instances > usize::from(u16::MAX) {
        bail!("at most {} instances (one distinct port each)", usize::from(u16::MAX) - crate::catalog_scale::BASE_PORT);
    }
    for (bin, pkg) in [(args.knotd.as_os_str(), "knot"), (args.dnsperf.as_ref(), "dnsperf")] {
        if which(bin).is_none() {
            bail!("{} not found: install Debian's {pkg} (scripts/install-test-deps.sh)", bin.to_string_lossy());
        }
    }
    let [a, b] = args.ips;
    let knot_addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, a, b, 2), args.knot_port));
    let shoal = start_shoal(args).await?;
    eprintln!("dns: Shoal's DNS at {} (pid {:?}), Knot's at {knot_addr}", shoal.dns, shoal.pid);
    let work = tempfile::Builder::new().prefix("shoal-bench-dns-").tempdir()?;
    let perf = dnsperf::Settings {
        bin: args.dnsperf.clone(),
        duration: args.duration,
        clients: args.clients,
        threads: args.threads,
        outstanding: args.outstanding,
        timeout: Duration::from_secs(2),
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut costs: Vec<(usize, inproc::Cost)> = Vec::new();
    let mut layout = Layout { services: 0, instances: args.instances, nodes: args.nodes };
    let mut loaded = 0;
    for &services in &sizes {
        layout.services = services;
        let total = layout.total();
        // The catalog grows: only the instances the last size did not have are registered.
        let new = loaded..total.max(loaded);
        eprintln!(
            "dns: registering {} more instances, {total} in all ({services} services × {})",
            new.len(),
            args.instances
        );
        let deadline = Instant::now() + args.load_timeout;
        let m = load(&shoal.api, layout, new.clone(), args.concurrency, args.request_timeout, deadline).await;
        if m.errors > 0 || m.ok as usize != new.len() {
            bail!("load: {} of {} registered, {} errors (first: {:?})", m.ok, new.len(), m.errors, m.first_error);
        }
        loaded = loaded.max(total);
        notes.push(format!(
            "{total} instances: {} registered in {:.2} s ({:.0} writes/s)",
            new.len(),
            m.elapsed.as_secs_f64(),
            m.ops_per_sec()
        ));
        // The node's DNS answers from a copy its feed keeps; wait until it has the last service.
        let last = Question { name: zone::service_name(&layout, total - 1), rtype: "A", kind: Kind::A };
        let dns = shoal.dns;
        block_in_place(|| {
            client::wait_for(dns, &last, Duration::from_secs(30), Duration::from_millis(10), |n: &Normal| {
                n.fits(Kind::A, layout.instances)
            })
        })?;

        let questions = zone::questions(&layout);
        let queries = work.path().join(format!("queries-{services}.txt"));
        std::fs::write(&queries, zone::query_file(&questions))?;
        let zone_text = zone::zone_file(&layout, Ipv4Addr::new(127, a, b, 2));
        let knot = block_in_place(|| Knot::start(&args.knotd, knot_addr, &zone_text, args.knot_udp_workers))?;
        let cmp = block_in_place(|| client::compare(shoal.dns, knot.addr, &questions, layout.instances))
            .with_context(|| format!("the servers' answers at {total} instances"))?;
        notes.push(format!(
            "{total} instances: all {} queries of the file answered the same by both; mean response {:.0} B (Shoal) / {:.0} B (Knot)",
            cmp.questions,
            cmp.shoal_bytes as f64 / cmp.questions as f64,
            cmp.knot_bytes as f64 / cmp.questions as f64
        ));

        let servers: [(&'static str, SocketAddr, Option<u32>); 2] =
            [("shoal", shoal.dns, shoal.pid), ("knot", knot.addr, Some(knot.pid()))];
        let verbose = !args.no_verbose;
        for (name, addr, pid) in servers {
            if !args.warmup.is_zero() {
                let warm = dnsperf::Settings { duration: args.warmup, ..perf.clone() };
                block_in_place(|| dnsperf::run(&warm, addr, &queries, None, false, pid, work.path()))
                    .with_context(|| format!("warm-up of {name}"))?;
            }
            eprintln!("dns: {total} instances, {name}: dnsperf for {:?} at the max rate", args.duration);
            let run = block_in_place(|| dnsperf::run(&perf, addr, &queries, None, verbose, pid, work.path()))
                .with_context(|| format!("dnsperf against {name} ({})", knot_log_hint(name, &knot)))?;
            eprintln!("dns: {name}: {:.0} queries/s, {} lost", run.qps, run.lost);
            rows.push(Row { instances: total, server: name, load: Load::Max, run });
        }
        let slowest = rows.iter().filter(|r| r.instances == total).map(|r| r.run.qps).fold(f64::INFINITY, f64::min);
        let rate = args.rate.unwrap_or((slowest / 2.0).round());
        if rate > 0.0 && verbose {
            for (name, addr, pid) in servers {
                eprintln!("dns: {total} instances, {name}: dnsperf for {:?} at {rate:.0}/s", args.duration);
                let run = block_in_place(|| dnsperf::run(&perf, addr, &queries, Some(rate), true, pid, work.path()))
                    .with_context(|| format!("fixed-rate dnsperf against {name}"))?;
                rows.push(Row { instances: total, server: name, load: Load::Rate(rate), run });
            }
        }
        drop(knot);
        if !args.answer_time.is_zero() {
            let cost = block_in_place(|| inproc::measure(&layout, &questions, shoal.dns, args.answer_time))
                .context("timing answer() in process")?;
            costs.push((total, cost));
        }
    }

    let mut changes_table = String::new();
    if args.changes > 0 {
        eprintln!(
            "dns: {} changes at {} instances, polling every {:?}",
            args.changes,
            layout.total(),
            args.poll_interval
        );
        let s = changes::Settings {
            changes: args.changes,
            poll: args.poll_interval,
            timeout: args.change_timeout,
            request_timeout: args.request_timeout,
        };
        let changes = changes::run(&shoal.api, shoal.dns, layout, &s).await?;
        changes_table = report::changes_table(&changes, layout.total());
    }

    println!();
    println!(
        "dnsperf {}: -c {} -T {} -q {} -l {} -e{}, the same query file for both (A, SRV, NXDOMAIN: a third each)",
        dnsperf_version(&args.dnsperf),
        args.clients,
        args.threads,
        args.outstanding,
        args.duration.as_secs_f64(),
        if args.no_verbose { "" } else { " -v" }
    );
    for n in &notes {
        println!("{n}");
    }
    println!();
    print!("{}", report::runs_table(&rows));
    println!();
    print!("{}", report::ratios_table(&rows));
    if !costs.is_empty() {
        println!();
        print!("{}", report::cost_table(&costs, &rows));
    }
    if !changes_table.is_empty() {
        println!();
        print!("{changes_table}");
    }
    Ok(())
}

/// Starts a one-node cluster on 127.A.B.1 (or takes the one of --api).
async fn start_shoal(args: &DnsBenchArgs) -> Result<Shoal> {
    if let (Some(api), Some(dns)) = (&args.api, args.dns) {
        return Ok(Shoal { api: api.trim_end_matches('/').to_string(), dns, pid: args.pid, _cluster: None });
    }
    let bin = args.shoal_bin.clone().unwrap_or_else(crate::compare::default_shoal_bin);
    if !bin.exists() {
        bail!("{} not found: cargo build --release -p shoal, or pass --shoal-bin", bin.display());
    }
    let [a, b] = args.ips;
    let ip = Ipv4Addr::new(127, a, b, 1);
    let dns = SocketAddr::V4(SocketAddrV4::new(ip, SHOAL_DNS_PORT));
    std::net::UdpSocket::bind(dns).with_context(|| format!("{dns}/udp is taken: pick another --ips"))?;
    let cluster = ShoalCluster::start(&bin, args.ips, 1, "none").await?;
    let (_, pid) = cluster.nodes()[0];
    // The DNS server starts with the agent; its apex answers once it is up.
    let apex = Question { name: zone::DOMAIN.to_string(), rtype: "SOA", kind: Kind::A };
    block_in_place(|| {
        client::wait_for(dns, &apex, Duration::from_secs(20), Duration::from_millis(50), |n: &Normal| {
            n.code == hickory_proto::op::ResponseCode::NoError && !n.answers.is_empty()
        })
    })?;
    Ok(Shoal { api: format!("http://{ip}:8500"), dns, pid: Some(pid), _cluster: Some(cluster) })
}

fn knot_log_hint(name: &str, knot: &Knot) -> String {
    if name == "knot" { format!("knotd's log:\n{}", knot.log_tail(20)) } else { "the node's DNS".into() }
}

/// The first line of `PROG -h` that names a version (dnsperf prints `Version 2.10.0`).
fn dnsperf_version(bin: &str) -> String {
    let out = std::process::Command::new(bin).arg("-h").output();
    out.ok()
        .and_then(|o| {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            text.lines().find_map(|l| l.strip_prefix("Version ").map(str::to_string))
        })
        .unwrap_or_else(|| "(version unknown)".into())
}

/// `bin` as given if it has a slash, else the first match on `PATH`.
fn which(bin: &std::ffi::OsStr) -> Option<PathBuf> {
    let p = PathBuf::from(bin);
    if p.components().count() > 1 {
        return p.exists().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(bin)).find(|c| c.is_file())
}
