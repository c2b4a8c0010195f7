//! Phase 1, the load: every instance through `PUT /v1/catalog/register`, a bounded number in
//! flight, each worker on its own keep-alive connection taking the next instance number.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{Layout, http_client};
use crate::load::Measurement;

/// Sends one registration; `Err` with the reason unless Consul's `true` came back.
pub async fn register(client: &reqwest::Client, api: &str, body: Vec<u8>) -> Result<(), String> {
    let resp = client
        .put(format!("{api}/v1/catalog/register"))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("PUT /v1/catalog/register: {e}"))?;
    let status = resp.status();
    let text = resp.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
    if status.is_success() && text.trim_ascii() == b"true" {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&text[..text.len().min(200)]).trim()))
    }
}

/// Registers every instance, `concurrency` at a time, each worker on its own connection taking the
/// next instance number; stops at `deadline` if the node is that slow.
pub async fn load(
    api: &str,
    layout: Layout,
    instances: std::ops::Range<usize>,
    concurrency: usize,
    timeout: Duration,
    deadline: Instant,
) -> Measurement {
    let next = Arc::new(AtomicUsize::new(instances.start));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, api, instances) = (next.clone(), api.to_string(), instances.clone());
        let client = http_client(timeout, 1);
        tasks.push(tokio::spawn(async move {
            let mut m = Measurement::default();
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    m.errors += 1;
                    m.first_error = Some(e.to_string());
                    return m;
                }
            };
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= instances.end.min(layout.total()) || Instant::now() >= deadline {
                    return m;
                }
                let t0 = Instant::now();
                match register(&client, &api, layout.register_body(k, "passing")).await {
                    Ok(()) => m.latencies_ns.push(t0.elapsed().as_nanos() as u64),
                    Err(e) => {
                        m.errors += 1;
                        m.first_error.get_or_insert(format!("instance {k}: {e}"));
                    }
                }
            }
        }));
    }
    merge(tasks, start).await
}

/// Joins client tasks into one measurement with sorted latencies.
pub async fn merge(tasks: Vec<tokio::task::JoinHandle<Measurement>>, start: Instant) -> Measurement {
    let mut all = Measurement::default();
    for t in tasks {
        match t.await {
            Ok(m) => {
                all.errors += m.errors;
                all.latencies_ns.extend(m.latencies_ns);
                if all.first_error.is_none() {
                    all.first_error = m.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(format!("client task failed: {e}"));
            }
        }
    }
    all.elapsed = start.elapsed();
    all.ok = all.latencies_ns.len() as u64;
    all.latencies_ns.sort_unstable();
    all
}
