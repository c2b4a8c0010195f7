//! Phase 3, the watch fan-out: how long one check flip takes to reach every blocking watcher of
//! the service.
//!
//! ```text
//!   W watchers ── GET /v1/health/service/svc-0000?index=N&wait=60s ──▶ parked in the node
//!   (all W connections established, then --park more)
//!   t0 ── PUT /v1/catalog/register (svc-0000-0's check → critical|passing)
//!   each watcher: t0 → its whole answer read          → p50, p99, max over the W
//! ```
//!
//! One HTTP/1.1 connection per watcher, as W independent clients would have; the connections stay
//! in the pool from round to round. Answers are checked (index moved, the flipped status is in the
//! body) only after the round, so the checking does not delay later answers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::probe::{Probe, consul_index, own_cpu_ms};
use super::{Layout, http_client, load::register};
use crate::load::Measurement;

/// Knobs of the fan-out.
pub struct Settings {
    pub watchers: usize,
    pub wait: Duration,
    pub park: Duration,
    pub answer_timeout: Duration,
    pub request_timeout: Duration,
}

/// Watchers sent at once before waiting for their connections.
const RAMP: usize = 50;
/// Bound on the wait for one step's connections: past the kernel's SYN retries (1, 3, 7, 15 s), so
/// a dropped SYN makes the round slow to start, not fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One round: one flip, every watcher's delay after it.
pub struct Round {
    /// The status the check was flipped to.
    pub to: &'static str,
    /// Watchers sent.
    pub watchers: usize,
    /// t0 → answer of every watcher answered correctly (sorted); `errors` are the others.
    pub lat: Measurement,
    /// The flip's own request, until its `true`.
    pub flip_ack_ms: f64,
    /// Size of one answer body.
    pub body_bytes: usize,
    /// CPU the manager used from t0 until the last answer (or the timeout), in ms.
    pub manager_cpu_ms: Option<f64>,
    /// CPU this load generator used in the same time: it shares the machine's cores.
    pub bench_cpu_ms: Option<f64>,
}

impl Round {
    pub fn answered(&self) -> usize {
        self.lat.ok as usize
    }
}

/// A watcher's answer: when it was read in full, and what it said.
struct Answer {
    at: Instant,
    status: reqwest::StatusCode,
    index: Option<u64>,
    body: Bytes,
}

/// Every round's latencies together.
pub fn overall(rounds: &[Round]) -> Measurement {
    let mut m = Measurement::default();
    for r in rounds {
        m.ok += r.lat.ok;
        m.errors += r.lat.errors;
        m.latencies_ns.extend(&r.lat.latencies_ns);
    }
    m.latencies_ns.sort_unstable();
    m
}

/// Runs `rounds` rounds, flipping `svc-0000-0`'s check critical, passing, critical, ...; leaves it
/// passing.
pub async fn run(probe: &Probe, layout: Layout, s: &Settings, rounds: usize) -> Result<Vec<Round>> {
    // A watcher's whole request may last `wait` (plus Consul's jitter of wait/16) if nothing moves.
    let watch_client = http_client(s.wait + s.wait / 8 + s.answer_timeout, s.watchers + 16)?;
    let flipper = http_client(s.request_timeout, 1)?;
    let mut out = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let to = if r % 2 == 0 { "critical" } else { "passing" };
        let round = one_round(probe, layout, s, &watch_client, &flipper, to).await?;
        eprintln!(
            "fan-out round {} (→ {to}): {}/{} answered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, flip ack {:.1} ms",
            r + 1,
            round.answered(),
            round.watchers,
            round.lat.percentile_ms(0.5),
            round.lat.percentile_ms(0.99),
            round.lat.max_ms(),
            round.flip_ack_ms
        );
        if let Some(e) = &round.lat.first_error {
            eprintln!("fan-out round {}: first error: {e}", r + 1);
        }
        out.push(round);
    }
    if rounds % 2 == 1 {
        register(&flipper, &probe.api, layout.register_body(0, "passing"))
            .await
            .map_err(|e| anyhow::anyhow!("putting svc-0000-0 back to passing: {e}"))?;
    }
    Ok(out)
}

async fn one_round(
    probe: &Probe,
    layout: Layout,
    s: &Settings,
    client: &reqwest::Client,
    flipper: &reqwest::Client,
    to: &'static str,
) -> Result<Round> {
    let service = layout.service(0);
    let (index, _) = probe.health(&service).await.context("the index of the watched service")?;
    let url = format!("{}/v1/health/service/{service}?index={index}&wait={}ms", probe.api, s.wait.as_millis());
    let w = Arc::new(Watchers {
        client: client.clone(),
        url,
        done: AtomicUsize::new(0),
        flipped: AtomicBool::new(false),
        retries: AtomicUsize::new(0),
        last_retry: Mutex::new(None),
    });
    // Sent in steps of RAMP, each step once the server holds a connection for every watcher sent so
    // far: 1,000 connects at once overflow the API listener's accept queue (128) and the dropped
    // SYNs are retried only after 1, 3, 7 s. Real watchers do not all connect in one millisecond
    // either; from the second round on the pooled connections are reused.
    let mut handles: Vec<JoinHandle<Result<Answer, String>>> = Vec::with_capacity(s.watchers);
    let ramp_start = Instant::now();
    while handles.len() < s.watchers {
        let step = RAMP.min(s.watchers - handles.len());
        handles.extend((0..step).map(|_| tokio::spawn(watch(w.clone()))));
        // A watcher that already ended holds no connection: it is reported below.
        let up = || probe.server_connections() + w.done.load(Ordering::SeqCst);
        let step_deadline = Instant::now() + CONNECT_TIMEOUT;
        while up() < handles.len() && Instant::now() < step_deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if up() < handles.len() {
            abort_all(&handles);
            bail!(
                "only {} connections to the API {CONNECT_TIMEOUT:?} after sending {} watchers ({} ended; \
                 client sockets to the API by TCP state: {})",
                probe.server_connections(),
                handles.len(),
                w.done.load(Ordering::SeqCst),
                probe.client_states()
            );
        }
    }
    let ramp = ramp_start.elapsed();
    let retries = w.retries.load(Ordering::SeqCst);
    if ramp > Duration::from_secs(1) || retries > 0 {
        let why = w.last_retry.lock().expect("retry lock").clone().unwrap_or_default();
        eprintln!(
            "fan-out: the {} watchers' connections took {ramp:.1?}; {retries} requests were sent again after a \
             transport error before the flip (last: {why})",
            s.watchers
        );
    }

    // Parked: one server-side connection per watcher is up; the pause lets the last requests be read
    // and reach the wait. A watcher that answers before the flip is an error, not a fast answer.
    tokio::time::sleep(s.park).await;
    let early = w.done.load(Ordering::SeqCst);
    if early > 0 {
        abort_all(&handles);
        let mut first = None;
        for h in handles.into_iter().filter(JoinHandle::is_finished) {
            first = match h.await {
                Ok(Ok(a)) => Some(format!("answered {} at index {:?}", a.status, a.index)),
                Ok(Err(e)) => Some(e),
                Err(_) => continue,
            };
            break;
        }
        bail!("{early} watchers ended before the flip of index {index} (first: {})", first.unwrap_or_default());
    }
    w.flipped.store(true, Ordering::SeqCst);

    let cpu0 = (probe.cpu_ms(), own_cpu_ms());
    let t0 = Instant::now();
    register(flipper, &probe.api, layout.register_body(0, to))
        .await
        .map_err(|e| anyhow::anyhow!("the flip to {to}: {e}"))?;
    let flip_ack_ms = t0.elapsed().as_secs_f64() * 1e3;

    let until = t0 + s.answer_timeout;
    let mut answers = Vec::with_capacity(s.watchers);
    let mut lat = Measurement::default();
    for h in &mut handles {
        match tokio::time::timeout_at(until, &mut *h).await {
            Ok(Ok(Ok(a))) => answers.push(a),
            Ok(Ok(Err(e))) => fail(&mut lat, e),
            Ok(Err(e)) => fail(&mut lat, format!("watcher task failed: {e}")),
            Err(_) => fail(&mut lat, format!("no answer {:?} after the flip", s.answer_timeout)),
        }
    }
    abort_all(&handles);
    let cpu1 = (probe.cpu_ms(), own_cpu_ms());
    let delta = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let (manager_cpu_ms, bench_cpu_ms) = (delta(cpu0.0, cpu1.0), delta(cpu0.1, cpu1.1));

    // Checked after the round so the checking costs the watchers nothing.
    let body_bytes = answers.first().map_or(0, |a| a.body.len());
    for a in &answers {
        match check(a, index, layout, to) {
            Ok(()) => lat.latencies_ns.push(a.at.saturating_duration_since(t0).as_nanos() as u64),
            Err(e) => fail(&mut lat, e),
        }
    }
    lat.ok = lat.latencies_ns.len() as u64;
    lat.latencies_ns.sort_unstable();
    lat.elapsed = t0.elapsed();
    Ok(Round { to, watchers: s.watchers, lat, flip_ack_ms, body_bytes, manager_cpu_ms, bench_cpu_ms })
}

fn fail(m: &mut Measurement, e: String) {
    m.errors += 1;
    m.first_error.get_or_insert(e);
}

fn abort_all(handles: &[JoinHandle<Result<Answer, String>>]) {
    for h in handles {
        h.abort();
    }
}

/// What every watcher of a round shares.
struct Watchers {
    client: reqwest::Client,
    url: String,
    /// Watchers that ended, with an answer or an error.
    done: AtomicUsize,
    /// Set just before the flip: from then on a transport error is a failure, not a retry.
    flipped: AtomicBool,
    /// Requests sent again after a transport error before the flip (a connection the server's full
    /// accept queue dropped, say): parking W watchers is the setup, not the measurement.
    retries: AtomicUsize,
    last_retry: Mutex<Option<String>>,
}

/// Times a watcher may send its request again before the flip.
const MAX_RETRIES: usize = 3;

/// One watcher: the blocking read, timed when its whole body has arrived.
async fn watch(w: Arc<Watchers>) -> Result<Answer, String> {
    let mut attempt = 0;
    let r = loop {
        let r = async {
            let resp = w.client.get(&w.url).send().await.map_err(|e| format!("GET {}: {e}", w.url))?;
            let (status, index) = (resp.status(), consul_index(resp.headers()));
            let body = resp.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
            Ok(Answer { at: Instant::now(), status, index, body })
        }
        .await;
        match r {
            Err(e) if attempt < MAX_RETRIES && !w.flipped.load(Ordering::SeqCst) => {
                attempt += 1;
                w.retries.fetch_add(1, Ordering::SeqCst);
                *w.last_retry.lock().expect("retry lock") = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            r => break r,
        }
    };
    w.done.fetch_add(1, Ordering::SeqCst);
    r
}

/// A right answer: 200, an index past the one waited on, every instance, and the flipped check's
/// new status.
fn check(a: &Answer, waited_on: u64, layout: Layout, to: &str) -> Result<(), String> {
    if !a.status.is_success() {
        return Err(format!("answer {}: {}", a.status, String::from_utf8_lossy(&a.body[..a.body.len().min(200)])));
    }
    if a.index.is_none_or(|i| i <= waited_on) {
        return Err(format!("answer at index {:?}, not past {waited_on}", a.index));
    }
    let entries: Vec<Value> = serde_json::from_slice(&a.body).map_err(|e| format!("answer body: {e}"))?;
    if entries.len() != layout.instances {
        return Err(format!("{} entries, not {}", entries.len(), layout.instances));
    }
    let id = layout.instance_id(0);
    let status = entries
        .iter()
        .find(|e| e["Service"]["ID"] == id.as_str())
        .and_then(|e| e["Checks"].as_array()?.iter().find(|c| c["ServiceID"] == id.as_str()))
        .and_then(|c| c["Status"].as_str());
    if status != Some(to) {
        return Err(format!("{id}'s check is {status:?} in the answer, not {to:?}"));
    }
    Ok(())
}

/// What one answer of the watched service costs with nobody else asking: `n` plain reads back to
/// back on one connection, their latency and the manager's CPU per read. A woken watcher does the
/// same work (the view, Consul's JSON, the write) minus the linearizing round, so W watchers need
/// about W times this CPU after a flip.
pub struct ReadCost {
    /// `GET /v1/health/service/<name>` (linearizable, the default).
    pub default: Measurement,
    /// The same with `?stale` (no ReadIndex round).
    pub stale: Measurement,
    /// Manager CPU per `?stale` read, in ms.
    pub manager_cpu_ms_per_read: Option<f64>,
}

pub async fn read_cost(probe: &Probe, layout: Layout, n: usize) -> Result<ReadCost> {
    let client = http_client(Duration::from_secs(10), 1)?;
    let url = format!("{}/v1/health/service/{}", probe.api, layout.service(0));
    let default = reads(&client, &url, n).await?;
    let cpu0 = probe.cpu_ms();
    let stale = reads(&client, &format!("{url}?stale"), n).await?;
    let manager_cpu_ms_per_read = probe.cpu_ms().zip(cpu0).map(|(b, a)| (b - a) / n.max(1) as f64);
    Ok(ReadCost { default, stale, manager_cpu_ms_per_read })
}

async fn reads(client: &reqwest::Client, url: &str, n: usize) -> Result<Measurement> {
    let mut m = Measurement::default();
    let start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let r = client.get(url).send().await?.error_for_status()?;
        r.bytes().await?;
        m.latencies_ns.push(t0.elapsed().as_nanos() as u64);
    }
    m.elapsed = start.elapsed();
    m.ok = m.latencies_ns.len() as u64;
    m.latencies_ns.sort_unstable();
    Ok(m)
}
