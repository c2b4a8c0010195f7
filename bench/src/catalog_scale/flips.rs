//! Phase 4, the health-flip load: check flips at a target rate, as a fleet of external health
//! checkers would send them, and what they cost in Raft entries.
//!
//! `clients` paced clients share the rate: client `i` sends its `n`-th flip at
//! `start + (n·clients + i) / rate`, or at once when it is behind (a slow answer is not hidden by
//! skipping sends), and nothing after `--flip-seconds`. Client `i` owns the instances `k ≡ i (mod clients)` and remembers their status,
//! so every flip is a real status change and two clients never race on one check. The group-commit
//! proposer may put many concurrent flips into one Raft entry; the log-index delta over the period
//! counts the entries.

use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use super::load::{merge, register};
use super::probe::Probe;
use super::{Layout, http_client};
use crate::load::Measurement;

/// Knobs of the flip load.
pub struct Settings {
    pub seconds: f64,
    pub rate: f64,
    pub clients: usize,
    pub request_timeout: Duration,
}

/// What the flip load measured.
pub struct Flips {
    /// Every flip's latency (send → `true`).
    pub m: Measurement,
    /// Raft entries appended between the reads before and after the flips.
    pub entries: u64,
    /// Durable log commits in the same period.
    pub fsyncs: u64,
    /// Seconds between those two reads.
    pub raft_secs: f64,
    /// Raft entries per second with no load, just before: what the node writes on its own.
    pub idle_entries_per_sec: f64,
}

/// How long the idle baseline of the Raft counters is sampled.
const IDLE_SAMPLE: Duration = Duration::from_secs(2);

pub async fn run(probe: &Probe, layout: Layout, s: &Settings) -> Result<Flips> {
    let clients = s.clients.clamp(1, layout.total());
    let idle0 = probe.raft().await?;
    let t_idle = Instant::now();
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle1 = probe.raft().await?;
    let idle_entries_per_sec = (idle1.last_log_index - idle0.last_log_index) as f64 / t_idle.elapsed().as_secs_f64();

    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(http_client(s.request_timeout, 1)?);
    }
    let before = probe.raft().await?;
    let t_raft = Instant::now();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(s.seconds.max(0.0));
    let interval = Duration::from_secs_f64(1.0 / s.rate.max(0.001));
    let tasks = conns
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let api = probe.api.clone();
            tokio::spawn(client_loop(client, api, layout, i, clients, start, interval, deadline))
        })
        .collect();
    let m = merge(tasks, start).await;
    let after = probe.raft().await?;
    let raft_secs = t_raft.elapsed().as_secs_f64();
    eprintln!(
        "flips: {} ok, {} errors in {:.2} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms; Raft entries {} → {}",
        m.ok,
        m.errors,
        m.elapsed.as_secs_f64(),
        m.ops_per_sec(),
        m.percentile_ms(0.5),
        m.percentile_ms(0.99),
        before.last_log_index,
        after.last_log_index
    );
    if let Some(e) = &m.first_error {
        eprintln!("flips: first error: {e}");
    }
    Ok(Flips {
        entries: after.last_log_index - before.last_log_index,
        fsyncs: after.fsyncs - before.fsyncs,
        raft_secs,
        idle_entries_per_sec,
        m,
    })
}

/// One paced client over its own share of the instances; ends at `deadline`.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    client: reqwest::Client,
    api: String,
    layout: Layout,
    i: usize,
    clients: usize,
    start: Instant,
    interval: Duration,
    deadline: Instant,
) -> Measurement {
    let owned: Vec<usize> = (i..layout.total()).step_by(clients).collect();
    let mut critical = vec![false; owned.len()];
    let mut m = Measurement::default();
    // xorshift64, seeded per client: the same sequence of instances in every run.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((i as u64 + 1) << 17);
    for n in 0u64.. {
        let at = start + interval.mul_f64((n * clients as u64 + i as u64) as f64);
        // Past the deadline nothing more is sent, also by a client that is behind: the period is
        // bounded, and the achieved rate shows what the node kept up with.
        if at >= deadline || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep_until(at).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % owned.len() as u64) as usize;
        let to = if critical[j] { "passing" } else { "critical" };
        let t0 = Instant::now();
        match register(&client, &api, layout.register_body(owned[j], to)).await {
            Ok(()) => {
                m.latencies_ns.push(t0.elapsed().as_nanos() as u64);
                critical[j] = !critical[j];
            }
            Err(e) => {
                m.errors += 1;
                m.first_error.get_or_insert(format!("instance {}: {e}", owned[j]));
            }
        }
    }
    m
}
