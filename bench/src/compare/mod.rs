//! `shoal-bench swarm-compare`: times container operations side by side, in one run, with the same
//! image on the same engine, for three systems:
//!
//! ```text
//!   floor  ── engine API on the unix socket ─────────────────────────────┐
//!   swarm  ── service API on the unix socket (docker swarm init) ──────────┼─► the engine ◄── count by label
//!   shoal  ── service API over TCP (3 shoal agents, --runtime docker) ────┘       (GET /containers/json)
//! ```
//!
//! Systems run one after the other (all rounds of all operations each), so Swarm mode is on only
//! for its own rows and Shoal's idle footprint is measured with Swarm off. Every operation cleans
//! up after itself before the next starts.

mod ops;
pub(crate) mod shoal;
mod swarm;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hyper::{Method, StatusCode};

use crate::engine::{Engine, Transport};
use ops::{Ctx, Driver, Outcome};

/// Flags of `shoal-bench swarm-compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Operations to time, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "create1,create10,create50,scale,rm,kill")]
    ops: Vec<Op>,
    /// Systems to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "floor,swarm,shoal")]
    systems: Vec<System>,
    /// Rounds of every operation on every system; the median is reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Bound on each operation (and on its setup and its cleanup); past it the row says "timeout".
    #[arg(long, default_value = "120s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// The `shoal` binary (default target/release/shoal if it exists, else target/debug/shoal).
    #[arg(long)]
    shoal_bin: Option<PathBuf>,
    /// A user-defined network (made beforehand, e.g. `docker network create benchnet`) the floor's
    /// containers join, to compare with Shoal's per-service bridge; default: the engine's bridge.
    #[arg(long, value_name = "NETWORK")]
    floor_network: Option<String>,
    /// Workload image, already on the engine (nothing is pulled).
    #[arg(long, default_value = "shoal:local")]
    image: String,
    /// Arguments of every container (the image's CMD is replaced by them), split on whitespace.
    #[arg(long, default_value = "whoami --port 8080", allow_hyphen_values = true)]
    args: String,
    /// The engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    docker_socket: PathBuf,
    /// The Shoal nodes listen on 127.A.B.1, .2 and .3 (given as A.B).
    #[arg(long, default_value = "77.0", value_parser = parse_block)]
    shoal_ips: [u8; 2],
    /// How long Shoal's idle footprint is measured, after the operations.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    idle_window: Duration,
    /// Test-only: `--runtime` of the Shoal nodes (`fake` checks the harness without containers).
    #[arg(long, default_value = "docker", hide = true)]
    shoal_runtime: String,
}

/// `A.B`, the middle octets of a block of loopback addresses 127.A.B.x.
pub(crate) fn parse_block(s: &str) -> Result<[u8; 2], String> {
    let parts: Vec<u8> = s.split('.').map(str::parse).collect::<Result<_, _>>().map_err(|e| format!("{s:?}: {e}"))?;
    match parts[..] {
        [a, b] => Ok([a, b]),
        _ => Err(format!("{s:?}: expected A.B (two numbers), e.g. 77.0")),
    }
}

/// One timed operation.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a service of 1 replica, until it runs.
    Create1,
    /// Create a service of 10 replicas, until all run.
    Create10,
    /// Create a service of 50 replicas, until all run.
    Create50,
    /// Scale 10 → 30, until 30 run.
    Scale,
    /// Remove a 50-replica service, until no container of it is left in any state.
    Rm,
    /// Kill one task's container, until its replacement runs.
    Kill,
}

impl Op {
    fn replicas(self) -> u64 {
        match self {
            Op::Create1 | Op::Kill => 1,
            Op::Create10 => 10,
            Op::Scale => 30,
            Op::Create50 | Op::Rm => 50,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Op::Create1 => "service create, 1 replica",
            Op::Create10 => "service create, 10 replicas",
            Op::Create50 => "service create, 50 replicas",
            Op::Scale => "scale 10 → 30",
            Op::Rm => "service rm, 50 replicas",
            Op::Kill => "kill a task's container → replacement runs",
        }
    }

    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// A system under test.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// The same containers through the engine API directly, in parallel.
    Floor,
    /// The engine's own Swarm mode.
    Swarm,
    /// A 3-node Shoal cluster with --runtime docker.
    Shoal,
}

/// Every round's outcome of every (system, operation).
#[derive(Default)]
struct Results(Vec<(System, Op, Outcome)>);

impl Results {
    /// The median over rounds; a timeout counts as longer than any time, a failure makes the cell
    /// "failed".
    fn median(&self, system: System, op: Op) -> Option<Outcome> {
        let all: Vec<Outcome> = self.0.iter().filter(|r| r.0 == system && r.1 == op).map(|r| r.2).collect();
        if all.is_empty() {
            return None;
        }
        if all.contains(&Outcome::Failed) {
            return Some(Outcome::Failed);
        }
        let mut secs: Vec<f64> =
            all.iter().map(|o| if let Outcome::Secs(s) = o { *s } else { f64::INFINITY }).collect();
        secs.sort_by(f64::total_cmp);
        let m = secs[secs.len() / 2];
        Some(if m.is_finite() { Outcome::Secs(m) } else { Outcome::Timeout })
    }
}

/// Runs the comparison and prints the table.
pub async fn run(args: CompareArgs) -> Result<()> {
    if args.rounds == 0 || args.ops.is_empty() || args.systems.is_empty() {
        bail!("--rounds, --ops and --systems must not be empty");
    }
    let engine = Engine::new(Transport::Unix(args.docker_socket.clone()));
    let img = engine.call(Method::GET, &format!("/images/{}/json", args.image), None).await?;
    if img.status == StatusCode::NOT_FOUND {
        bail!("image {} is not on the engine (nothing is pulled: build it first)", args.image);
    }
    img.expect("inspect image", &[])?;
    if args.systems.contains(&System::Swarm) && engine.swarm_state().await? != "inactive" {
        bail!("the engine is already in a swarm; refusing to start (leave it alone or leave it first)");
    }
    let shoal_bin = match &args.shoal_bin {
        Some(p) => p.clone(),
        None => default_shoal_bin(),
    };
    if args.systems.contains(&System::Shoal) && !shoal_bin.exists() {
        bail!("{} not found: cargo build --release -p shoal, or pass --shoal-bin", shoal_bin.display());
    }
    let ctx = Ctx {
        engine: engine.clone(),
        image: args.image.clone(),
        args: args.args.split_whitespace().map(str::to_string).collect(),
        timeout: args.timeout,
        floor_network: args.floor_network.clone(),
    };
    // Names unique to this run, so the final sweep removes only what it made.
    let prefix = format!("sbench{}-", std::process::id());
    eprintln!(
        "swarm-compare: image {} {:?}, ops {:?}, systems {:?}, {} round(s), timeout {:?}",
        ctx.image, ctx.args, args.ops, args.systems, args.rounds, ctx.timeout
    );

    let mut results = Results::default();
    let mut idle = None;
    let outcome = {
        let work = run_systems(&args, &ctx, &shoal_bin, &prefix, &mut results, &mut idle);
        tokio::pin!(work);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = &mut work => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated")),
        }
        // `work` is dropped here: the Swarm and Shoal guards put the engine back and stop the nodes.
    };
    if let Err(e) = sweep(&engine, &prefix).await {
        eprintln!("final sweep: {e:#}");
    }
    println!();
    print!("{}", table(&args.ops, &results));
    if let Some(idle) = &idle {
        println!();
        print!("{idle}");
    }
    outcome
}

/// `target/release/shoal` if it exists, else `target/debug/shoal` (under `CARGO_TARGET_DIR` if set).
pub(crate) fn default_shoal_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let release = target.join("release/shoal");
    if release.exists() { release } else { target.join("debug/shoal") }
}

async fn run_systems(
    args: &CompareArgs,
    ctx: &Ctx,
    shoal_bin: &Path,
    prefix: &str,
    results: &mut Results,
    idle: &mut Option<String>,
) -> Result<()> {
    for &system in &args.systems {
        match system {
            System::Floor => run_ops(system, &Driver::Floor, args, ctx, prefix, results).await,
            System::Swarm => {
                let mut mode = swarm::SwarmMode::init(&ctx.engine, &args.docker_socket).await?;
                let driver = Driver::Service { api: ctx.engine.clone(), key: ops::SWARM_KEY };
                run_ops(system, &driver, args, ctx, prefix, results).await;
                mode.leave();
            }
            System::Shoal => {
                let cluster = shoal::ShoalCluster::start(shoal_bin, args.shoal_ips, 3, &args.shoal_runtime).await?;
                let api = Engine::new(Transport::Tcp(cluster.docker_api().await?));
                let driver = Driver::Service { api, key: ops::SHOAL_KEY };
                run_ops(system, &driver, args, ctx, prefix, results).await;
                // A moment for the last removal's bookkeeping (task reaping, network removal) to end.
                tokio::time::sleep(Duration::from_secs(3)).await;
                eprintln!("shoal: measuring the idle footprint over {:?} (no services)", args.idle_window);
                let mut text = String::new();
                for p in cluster.idle(args.idle_window).await? {
                    writeln!(
                        text,
                        "shoal idle, {} (pid {}): RSS {:.1} MiB, CPU {:.2} % of one core over {:?}",
                        p.name,
                        p.pid,
                        p.rss_kib as f64 / 1024.0,
                        p.cpu_percent,
                        args.idle_window
                    )?;
                }
                *idle = Some(text);
                cluster.stop();
            }
        }
    }
    Ok(())
}

async fn run_ops(system: System, driver: &Driver, args: &CompareArgs, ctx: &Ctx, prefix: &str, results: &mut Results) {
    let sys = system.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
    for round in 1..=args.rounds {
        for &op in &args.ops {
            let name = format!("{prefix}{}-{round}", op.name());
            let outcome = ops::run(driver, ctx, op, &name).await;
            eprintln!("{sys}: round {round}: {}: {}", op.title(), cell(Some(outcome)));
            results.0.push((system, op, outcome));
        }
    }
}

/// Force-removes every container this run made that is still on the engine: the floor's, and any
/// task container of a service named with this run's prefix (a stopped node or a left swarm can
/// leave them behind).
async fn sweep(engine: &Engine, prefix: &str) -> Result<()> {
    let mut left = 0;
    for key in [ops::SWARM_KEY, ops::SHOAL_KEY, "shoal.bench.op"] {
        let list = engine
            .call(
                Method::GET,
                &format!(
                    "/containers/json?all=1&filters={}",
                    crate::engine::encode(&format!("{{\"label\":[\"{key}\"]}}"))
                ),
                None,
            )
            .await?
            .expect("list containers", &[])?
            .json()?;
        for c in list.as_array().context("not an array")? {
            if c["Labels"][key].as_str().is_some_and(|n| n.starts_with(prefix))
                && let Some(id) = c["Id"].as_str()
            {
                left += 1;
                engine.call(Method::DELETE, &format!("/containers/{id}?force=1"), None).await?;
            }
        }
    }
    if left > 0 {
        eprintln!("final sweep: force-removed {left} leftover container(s) of this run");
    }
    Ok(())
}

fn cell(o: Option<Outcome>) -> String {
    match o {
        None => "-".into(),
        Some(Outcome::Secs(s)) => format!("{s:.2}"),
        Some(Outcome::Timeout) => "timeout".into(),
        Some(Outcome::Failed) => "failed".into(),
    }
}

fn ratio(a: Option<Outcome>, b: Option<Outcome>) -> String {
    match (a, b) {
        (Some(Outcome::Secs(a)), Some(Outcome::Secs(b))) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn table(op_list: &[Op], results: &Results) -> String {
    let mut out = String::from(
        "| operation | floor s | swarm s | shoal s | shoal/floor | shoal/swarm |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for &op in op_list {
        let [f, s, h] = [System::Floor, System::Swarm, System::Shoal].map(|sys| results.median(sys, op));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            op.title(),
            cell(f),
            cell(s),
            cell(h),
            ratio(h, f),
            ratio(h, s)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let cases: [(&str, Vec<Outcome>, Option<Outcome>); 5] = [
            ("none", vec![], None),
            ("one", vec![Outcome::Secs(1.0)], Some(Outcome::Secs(1.0))),
            ("three", vec![Outcome::Secs(3.0), Outcome::Secs(1.0), Outcome::Secs(2.0)], Some(Outcome::Secs(2.0))),
            (
                "a timeout is slowest",
                vec![Outcome::Timeout, Outcome::Secs(1.0), Outcome::Secs(2.0)],
                Some(Outcome::Secs(2.0)),
            ),
            ("failure wins", vec![Outcome::Secs(1.0), Outcome::Failed], Some(Outcome::Failed)),
        ];
        for (name, outcomes, want) in cases {
            let r = Results(outcomes.into_iter().map(|o| (System::Floor, Op::Create1, o)).collect());
            assert_eq!(r.median(System::Floor, Op::Create1), want, "{name}");
        }
    }

    #[test]
    fn blocks() {
        assert_eq!(parse_block("77.0"), Ok([77, 0]));
        assert!(parse_block("77.0.0").is_err());
        assert!(parse_block("77.256").is_err());
        assert!(parse_block("a.b").is_err());
    }

    #[test]
    fn table_ratios() {
        let r = Results(vec![
            (System::Floor, Op::Create10, Outcome::Secs(1.0)),
            (System::Swarm, Op::Create10, Outcome::Secs(4.0)),
            (System::Shoal, Op::Create10, Outcome::Secs(2.0)),
            (System::Shoal, Op::Rm, Outcome::Timeout),
        ]);
        let t = table(&[Op::Create10, Op::Rm], &r);
        assert!(t.contains("| service create, 10 replicas | 1.00 | 4.00 | 2.00 | 2.00 | 0.50 |"), "{t}");
        assert!(t.contains("| service rm, 50 replicas | - | - | timeout | - | - |"), "{t}");
    }
}
