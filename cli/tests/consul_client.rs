//! A real Consul client library (py-consul, installed by scripts/install-test-deps.sh) drives the KV API.

use std::process::Command;

use shoal_testkit::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_works_unchanged() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/consul_client.py");
    let ip = c.nodes[0].ip.to_string();
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args([script, &ip, "8500"]).output())
        .await
        .unwrap()
        .expect("python3 (run scripts/install-test-deps.sh)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "py-consul checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all KV checks passed"), "{stdout}");
}

/// The catalog, health and agent calls through py-consul (cli/tests/consul_catalog.py): HTTP and
/// TTL checks run by the node's check runner, maintenance, blocking queries, filters, bad input.
#[tokio::test(flavor = "multi_thread")]
async fn py_consul_catalog_health_and_agent() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/consul_catalog.py");
    let ip = c.nodes[0].ip.to_string();
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").args([script, &ip, "8500", "node1"]).output())
            .await
            .unwrap()
            .expect("python3 (run scripts/install-test-deps.sh)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "py-consul catalog checks failed:\n{stdout}\n{stderr}\n{}", c.log_tail(0, 60));
    assert!(stdout.contains("all catalog checks passed"), "{stdout}");
}
