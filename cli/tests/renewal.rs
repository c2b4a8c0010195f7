//! Certificate renewal on every role, and what a node whose certificate expired anyway does.
//!
//! The managers issue certificates valid for 20 s (`--cert-expiry`): renewal is due after about
//! 13 s, which leaves about 7 s for retries on a loaded machine and keeps each test under a minute.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use shoal_testkit::{Cluster, ClusterOptions, get_json, wait_for};

const EXPIRY: &str = "20s";

fn options() -> ClusterOptions {
    ClusterOptions { agent_args: vec!["--cert-expiry".into(), EXPIRY.into()] }
}

/// The end of validity of the node certificate in `data_dir/tls/node.pem`.
fn not_after(data_dir: &Path) -> SystemTime {
    let cert_pem = std::fs::read_to_string(data_dir.join("tls/node.pem")).expect("node.pem");
    let cert = shoal_registry::pki::tls::NodeCert { ca_pem: String::new(), cert_pem, key_pem: String::new() };
    cert.validity().expect("a readable certificate").1
}

async fn wait_until(what: &str, t: SystemTime) {
    let timeout = t.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(5);
    wait_for(what, timeout, || async move { (SystemTime::now() > t).then_some(()) }).await;
}

async fn status(api: &str, name: &str) -> Option<String> {
    let nodes: Vec<serde_json::Value> = get_json(api, "/v1/nodes").await?;
    nodes.iter().find(|n| n["Name"] == name).and_then(|n| n["Status"].as_str().map(str::to_string))
}

async fn wait_status(api: &str, name: &str, want: &str, timeout: Duration) {
    wait_for(
        &format!("{name} to be {want}"),
        timeout,
        || async move { (status(api, name).await? == want).then_some(()) },
    )
    .await;
}

/// What every expired-certificate refusal must tell the operator.
fn assert_says_how_to_rejoin(log: &str, data_dir: &Path, role: &str) {
    println!("{}", log.lines().find(|l| l.contains("expired at")).unwrap_or("(no expiry message)"));
    for want in [
        "the node certificate of this node expired at ",
        "it cannot reach the cluster",
        &format!("move the data dir {} aside", data_dir.display()),
        &format!("`shoal join-token {role}` on a manager"),
        "shoal agent --join MANAGER --token TOKEN",
        "`shoal node rm ",
    ] {
        assert!(log.contains(want), "{want:?} missing from the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_renews_its_certificate_and_stays_ready_across_a_manager_restart() {
    let mut c = Cluster::start(1, options()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    let name = format!("node{}", w + 1);
    let first = not_after(&c.nodes[w].data_dir);

    // Past the first certificate's expiry: the worker renewed it while running.
    wait_until("the worker's first certificate to expire", first + Duration::from_secs(1)).await;
    let renewed = not_after(&c.nodes[w].data_dir);
    assert!(renewed > first, "the worker's certificate on disk was renewed: {renewed:?} vs {first:?}");
    assert!(c.log_tail(w, 300).contains("renewed the node certificate"), "{}", c.log_tail(w, 30));
    assert_eq!(status(&api, &name).await.as_deref(), Some("Ready"));

    // A manager restart makes every connection new: the worker's handshakes need a valid certificate.
    c.kill(0);
    c.restart(0);
    c.wait_leader(Duration::from_secs(20)).await;
    let up = Instant::now();

    // The new leader gives every node one down window (5 s) before judging; after two, a Ready
    // worker is one whose heartbeats reach the cluster port.
    let mut checks = 0;
    while up.elapsed() < Duration::from_secs(11) {
        if let Some(s) = status(&api, &name).await {
            assert_eq!(s, "Ready", "the worker after the manager's restart ({:?})", up.elapsed());
            checks += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(checks > 10, "the restarted manager answered only {checks} times");

    // And it renews from the restarted manager too.
    let dir = c.nodes[w].data_dir.clone();
    wait_for("a renewal from the restarted manager", Duration::from_secs(25), || {
        let dir = dir.clone();
        async move { (not_after(&dir) > renewed).then_some(()) }
    })
    .await;
    assert_eq!(status(&api, &name).await.as_deref(), Some("Ready"));
    let since_restart = c.log_tail(w, 60);
    assert!(!since_restart.contains("certificate expired"), "{since_restart}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_certificate_expired_while_it_was_off_says_how_to_rejoin() {
    let mut c = Cluster::start(1, options()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    let name = format!("node{}", w + 1);

    // Both off for longer than their certificates live.
    c.kill(w);
    c.kill(0);
    let expiry = not_after(&c.nodes[w].data_dir).max(not_after(&c.nodes[0].data_dir));
    wait_until("both certificates to expire", expiry + Duration::from_secs(1)).await;

    // The only manager needs nobody to lead: it comes back and signs itself a new certificate.
    c.restart(0);
    c.wait_leader(Duration::from_secs(20)).await;
    let dir = c.nodes[0].data_dir.clone();
    wait_for("the lone manager to renew its expired certificate", Duration::from_secs(15), || {
        let dir = dir.clone();
        async move { (not_after(&dir) > SystemTime::now() + Duration::from_secs(5)).then_some(()) }
    })
    .await;
    assert!(c.log_tail(0, 100).contains("it is the cluster's only manager"), "{}", c.log_tail(0, 30));
    assert_eq!(c.client(0).put("after-expiry", b"yes", "").await, Ok(true));

    // The worker cannot come back by itself: it stops at once and says what to do.
    c.restart(w);
    let exit = c.wait_exit(w, Duration::from_secs(20)).await.expect("the expired worker to exit by itself");
    assert!(!exit.success(), "exit status {exit:?}");
    assert_says_how_to_rejoin(&c.log_tail(w, 20), &c.nodes[w].data_dir, "worker");

    // The leader shows it Down (after the new leader's first down window), not Ready.
    wait_status(&api, &name, "Down", Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_whose_certificate_expires_stops_and_says_how_to_rejoin() {
    let mut c = Cluster::start(1, options()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    let name = format!("node{}", w + 1);

    // With the manager frozen, every renewal fails until the certificate has expired.
    c.pause(0);
    let expiry = not_after(&c.nodes[w].data_dir);
    let timeout = expiry.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(20);
    let exit = c.wait_exit(w, timeout).await.expect("the worker to stop once its certificate expired");
    assert!(SystemTime::now() >= expiry, "stopped before its certificate expired");
    assert!(!exit.success(), "exit status {exit:?}");
    let log = c.log_tail(w, 30);
    assert!(log.contains("certificate renewal failed; retrying"), "it tried first:\n{log}");
    assert_says_how_to_rejoin(&log, &c.nodes[w].data_dir, "worker");

    // The manager, thawed, renews its own certificate (it leads and signs) and marks the worker down.
    c.resume(0);
    wait_status(&api, &name, "Down", Duration::from_secs(15)).await;
    assert_eq!(c.client(0).put("still-up", b"yes", "").await, Ok(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_among_several_whose_certificate_expired_while_it_was_off_says_how_to_rejoin() {
    let mut c = Cluster::start(3, options()).await;
    let gone = (c.wait_leader(Duration::from_secs(10)).await + 1) % 3;
    c.kill(gone);
    wait_until("its certificate to expire", not_after(&c.nodes[gone].data_dir) + Duration::from_secs(1)).await;

    // The others refuse its certificate, and it cannot lead alone: it stops at once.
    c.restart(gone);
    let exit = c.wait_exit(gone, Duration::from_secs(20)).await.expect("the expired manager to exit by itself");
    assert!(!exit.success(), "exit status {exit:?}");
    assert_says_how_to_rejoin(&c.log_tail(gone, 20), &c.nodes[gone].data_dir, "manager");

    // The two others renewed theirs and keep the cluster going.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    assert_eq!(c.client(leader).put("two-left", b"yes", "").await, Ok(true));
    wait_status(&c.nodes[leader].http_addr(), &format!("node{}", gone + 1), "Down", Duration::from_secs(10)).await;
}
