//! The load loops: N clients, each on its own keep-alive connection, sending requests back to back
//! until a deadline or a request count, whichever comes first, recording every latency.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

use crate::target::{Request, System, Target, is_success};

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One client, sequential puts.
    Put1,
    /// `clients` concurrent clients, puts.
    PutN,
    /// `clients` concurrent clients, linearizable reads.
    GetN,
}

impl Workload {
    pub fn name(self, clients: usize) -> String {
        match self {
            Workload::Put1 => "put1".into(),
            Workload::PutN => format!("put{clients}"),
            Workload::GetN => format!("get{clients}"),
        }
    }

    fn clients(self, settings: &Settings) -> usize {
        match self {
            Workload::Put1 => 1,
            Workload::PutN | Workload::GetN => settings.clients,
        }
    }

    fn is_put(self) -> bool {
        matches!(self, Workload::Put1 | Workload::PutN)
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "put1" => Ok(Workload::Put1),
            "put64" | "putN" => Ok(Workload::PutN),
            "get64" | "getN" => Ok(Workload::GetN),
            _ => Err(format!("unknown workload {s:?}: put1, put64 (putN) or get64 (getN)")),
        }
    }
}

/// Knobs shared by every measurement.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub warmup: Duration,
    pub clients: usize,
    pub keys: usize,
    pub value_size: usize,
    pub max_ops_per_client: u64,
    pub request_timeout: Duration,
}

/// The outcome of one measured run.
#[derive(Debug, Default)]
pub struct Measurement {
    /// Requests that succeeded.
    pub ok: u64,
    /// Requests that failed (transport error, timeout, unexpected status or body).
    pub errors: u64,
    /// From the start of the clients to the end of the last one.
    pub elapsed: Duration,
    /// Latency of every successful request, in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Measurement {
    /// Two measurements of consecutive periods as one (times add up, latencies merge).
    pub fn combine(mut self, other: Measurement) -> Measurement {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies_ns.extend(other.latencies_ns);
        self.latencies_ns.sort_unstable();
        self.first_error = self.first_error.or(other.first_error);
        self
    }

    pub fn ops_per_sec(&self) -> f64 {
        if self.elapsed.is_zero() { 0.0 } else { self.ok as f64 / self.elapsed.as_secs_f64() }
    }

    /// Exact nearest-rank percentile (`q` in 0..=1) of the recorded latencies, in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let n = self.latencies_ns.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_ns[rank - 1] as f64 / 1e6
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_ns.last().map_or(f64::NAN, |&ns| ns as f64 / 1e6)
    }
}

/// What one client recorded.
struct ClientResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// The same value for every write of a run: printable bytes, identical for both systems.
fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

fn http_client(settings: &Settings) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(settings.request_timeout)
        .build()?)
}

/// The requests of a workload, one per key, built once so building them costs nothing in the loop.
fn requests(target: &Target, workload: Workload, settings: &Settings) -> Arc<Vec<Request>> {
    let v = value(settings.value_size);
    Arc::new((0..settings.keys).map(|i| if workload.is_put() { target.put(i, &v) } else { target.get(i) }).collect())
}

/// Writes every key once (16 clients), so that reads find them. Fails if any write fails.
pub async fn preload(target: &Target, settings: &Settings) -> Result<()> {
    let reqs = requests(target, Workload::PutN, settings);
    let writers = settings.keys.min(16);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = http_client(settings)?;
        let reqs = reqs.clone();
        let system = target.spec.system;
        tasks.push(tokio::spawn(async move {
            for r in reqs.iter().skip(w).step_by(writers) {
                let (ok, err) = send(&client, system, true, r).await;
                if !ok {
                    return Err(err.unwrap_or_default());
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        if let Err(e) = t.await? {
            bail!("a preload write failed: {e}");
        }
    }
    Ok(())
}

/// Warms up for `settings.warmup`, then measures for `settings.duration`, on the same connections.
pub async fn run(target: &Target, workload: Workload, settings: &Settings) -> Measurement {
    let n = workload.clients(settings);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        match http_client(settings) {
            Ok(c) => clients.push(c),
            Err(e) => return Measurement { first_error: Some(e.to_string()), ..Default::default() },
        }
    }
    let reqs = requests(target, workload, settings);
    let system = target.spec.system;
    if !settings.warmup.is_zero() {
        phase(&clients, system, workload, &reqs, settings.warmup, settings.max_ops_per_client).await;
    }
    phase(&clients, system, workload, &reqs, settings.duration, settings.max_ops_per_client).await
}

async fn phase(
    clients: &[reqwest::Client],
    system: System,
    workload: Workload,
    reqs: &Arc<Vec<Request>>,
    duration: Duration,
    max_ops: u64,
) -> Measurement {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let reqs = reqs.clone();
        // The same key sequence per client for every system.
        let seed = 0x9E37_79B9_7F4A_7C15u64 ^ ((i as u64 + 1) << 17);
        tasks.push(tokio::spawn(client_loop(client, system, workload.is_put(), reqs, deadline, max_ops, seed)));
    }
    let mut m = Measurement::default();
    for t in tasks {
        match t.await {
            Ok(r) => {
                m.ok += r.latencies_ns.len() as u64;
                m.errors += r.errors;
                m.latencies_ns.extend(r.latencies_ns);
                if m.first_error.is_none() {
                    m.first_error = r.first_error;
                }
            }
            Err(e) => {
                m.errors += 1;
                m.first_error.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    m.elapsed = start.elapsed();
    m.latencies_ns.sort_unstable();
    m
}

/// One client: requests back to back on its connection until `deadline` or `max_ops` requests.
async fn client_loop(
    client: reqwest::Client,
    system: System,
    is_put: bool,
    reqs: Arc<Vec<Request>>,
    deadline: Instant,
    max_ops: u64,
    mut seed: u64,
) -> ClientResult {
    let mut out = ClientResult { latencies_ns: Vec::with_capacity(16 * 1024), errors: 0, first_error: None };
    let mut sent = 0u64;
    while sent < max_ops && Instant::now() < deadline {
        sent += 1;
        // xorshift64: a cheap, well-spread key choice.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let req = &reqs[(seed % reqs.len() as u64) as usize];
        let t0 = Instant::now();
        let (ok, err) = send(&client, system, is_put, req).await;
        let ns = t0.elapsed().as_nanos() as u64;
        if ok {
            out.latencies_ns.push(ns);
        } else {
            out.errors += 1;
            if out.first_error.is_none() {
                out.first_error = err;
            }
            // Do not spin on a failing server.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    out
}

/// Sends one request and reads the whole answer; `(true, None)` on success.
async fn send(client: &reqwest::Client, system: System, is_put: bool, r: &Request) -> (bool, Option<String>) {
    let mut builder = client.request(r.method.clone(), &r.url);
    if !r.body.is_empty() {
        builder = builder.body(r.body.clone());
    }
    let resp = match builder.send().await {
        Ok(resp) => resp,
        Err(e) => return (false, Some(format!("{} {}: {e}", r.method, r.url))),
    };
    let status = resp.status();
    match resp.bytes().await {
        Ok(body) if is_success(system, is_put, status, &body) => (true, None),
        Ok(body) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            (false, Some(format!("{} {}: {status}: {text}", r.method, r.url)))
        }
        Err(e) => (false, Some(format!("{} {}: reading the body: {e}", r.method, r.url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let m = Measurement {
            ok: 100,
            latencies_ns: (1..=100).map(|i| i * 1_000_000).collect(),
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        assert_eq!(m.percentile_ms(0.5), 50.0);
        assert_eq!(m.percentile_ms(0.99), 99.0);
        assert_eq!(m.percentile_ms(1.0), 100.0);
        assert_eq!(m.ops_per_sec(), 50.0);
        assert!(Measurement::default().percentile_ms(0.5).is_nan());
    }

    #[test]
    fn workloads_parse() {
        assert_eq!("put1".parse::<Workload>(), Ok(Workload::Put1));
        assert_eq!("put64".parse::<Workload>(), Ok(Workload::PutN));
        assert_eq!("get64".parse::<Workload>(), Ok(Workload::GetN));
        assert!("del".parse::<Workload>().is_err());
        assert_eq!(Workload::GetN.name(32), "get32");
    }
}
