//! A route-table swap under load drops nothing: 8 kept-alive client connections send requests
//! back to back while the table is swapped every 5 ms between two instance sets; every request
//! must get a 200 from an instance of the set it could have seen, and no client connection may be
//! closed. In nextest's `serial` group (the name says `under_load`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Svc, backend, connect, get, install, proxy, view};
use shoal_router::proxy::ProxyOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_swaps_under_load_drop_nothing() {
    let bs = [
        backend("127.0.33.41", "a").await,
        backend("127.0.33.42", "b").await,
        backend("127.0.33.43", "c").await,
        backend("127.0.33.44", "d").await,
    ];
    let p = proxy(ProxyOptions::default()).await;
    let set1 = vec![bs[0].addr, bs[1].addr, bs[2].addr];
    let set2 = vec![bs[1].addr, bs[2].addr, bs[3].addr];
    install(&p.table, &view(1, &[Svc { name: "web", labels: &[], endpoints: set1.clone() }]));

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (addr, stop) = (p.addr, stop.clone());
        clients.push(tokio::spawn(async move {
            // One connection for the whole run: a send on a closed connection panics the task.
            let mut conn = connect(addr).await;
            let mut seen: HashMap<String, u64> = HashMap::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (s, _, body) = get(&mut conn, "web.shoal", "/", &[]).await;
                if s != 200 {
                    failures.push(format!("{s}: {body}"));
                }
                *seen.entry(body).or_default() += 1;
            }
            (seen, failures)
        }));
    }
    let mut swaps = 0u64;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let set = if swaps.is_multiple_of(2) { &set2 } else { &set1 };
        install(&p.table, &view(swaps + 2, &[Svc { name: "web", labels: &[], endpoints: set.clone() }]));
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // End on set 2: after the last swap, "a" gets nothing new.
    install(&p.table, &view(swaps + 2, &[Svc { name: "web", labels: &[], endpoints: set2.clone() }]));
    let a_before = bs[0].hits.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total: HashMap<String, u64> = HashMap::new();
    for c in clients {
        let (seen, failures) = c.await.expect("a client connection failed");
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        for (k, v) in seen {
            *total.entry(k).or_default() += v;
        }
    }
    let n: u64 = total.values().sum();
    assert!(swaps > 100, "swapped {swaps} times");
    assert!(n > 1000, "a steady stream: {n} requests");
    for name in ["a", "b", "c", "d"] {
        assert!(total.get(name).copied().unwrap_or(0) > 0, "{name} served some: {total:?}");
    }
    assert_eq!(total.len(), 4, "only the instances: {total:?}");
    let a_after = bs[0].hits.load(Ordering::Relaxed);
    assert!(a_after - a_before <= 8, "after the last swap \"a\" gets only what was in flight: {}", a_after - a_before);
    eprintln!("{n} requests over {swaps} swaps on 8 kept-alive connections, 0 failed: {total:?}");
}
