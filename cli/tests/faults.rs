//! Liveness under faults the network makes, not the process: packet loss. Each test runs in a
//! network namespace of its own (`unshare(CLONE_NEWNET)` before the runtime starts, so every
//! thread and every `shoal` process it spawns lives there), and `iptables` rules are added only
//! inside that namespace. Needs root and iptables (scripts/install-test-deps.sh installs it).

use std::process::Command;
use std::time::{Duration, Instant};

use shoal_testkit::{Cluster, ClusterOptions, get_json, wait_for};

/// Moves this thread (and everything it starts from now on) into a fresh network namespace with
/// loopback up.
fn own_network_namespace() {
    // SAFETY: unshare(2) with a flag only; it affects the calling thread, which has spawned nothing yet.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET) failed (needs root): {}", std::io::Error::last_os_error());
    run("ip", &["link", "set", "lo", "up"]);
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Drops this share (0..1) of the packets to and from `ip` (both directions pass INPUT on loopback).
fn packet_loss(ip: &str, probability: &str) {
    for dir in ["-s", "-d"] {
        run(
            "iptables",
            &[
                "-A",
                "INPUT",
                dir,
                ip,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                probability,
                "-j",
                "DROP",
            ],
        );
    }
}

async fn status(api: &str, name: &str) -> Option<String> {
    let nodes: Vec<serde_json::Value> = get_json(api, "/v1/nodes").await?;
    nodes.iter().find(|n| n["Name"] == name).and_then(|n| n["Status"].as_str().map(str::to_string))
}

#[test]
fn a_worker_with_20_percent_packet_loss_is_not_marked_down() {
    own_network_namespace();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = Cluster::start(1, ClusterOptions::default()).await;
        let w = c.add_worker(0).await;
        let api = c.nodes[0].http_addr();
        let name = format!("node{}", w + 1);
        let wip = c.nodes[w].ip.to_string();

        // 20% of every packet to or from the worker is lost, for three down windows.
        packet_loss(&wip, "0.2");
        let start = Instant::now();
        let mut checks = 0;
        while start.elapsed() < Duration::from_secs(15) {
            if let Some(s) = status(&api, &name).await {
                assert_eq!(s, "Ready", "the lossy worker flapped after {:?}", start.elapsed());
                checks += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(checks > 50, "the leader answered only {checks} times");
        assert!(!c.log_tail(0, 500).contains("node marked down"), "{}", c.log_tail(0, 30));
        println!("20% packet loss for 15 s: the worker stayed Ready ({checks} checks)");

        // The same test with all packets lost does mark it down: the check above can fail.
        packet_loss(&wip, "1.0");
        let cut = Instant::now();
        wait_for("the cut-off worker to be down", Duration::from_secs(7), || {
            let (api, name) = (api.clone(), name.clone());
            async move { (status(&api, &name).await? == "Down").then_some(()) }
        })
        .await;
        println!("100% packet loss: marked down after {:?}", cut.elapsed());
    });
}

#[test]
fn a_worker_that_gossips_but_cannot_reach_the_cluster_port_is_marked_down() {
    own_network_namespace();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut c = Cluster::start(1, ClusterOptions::default()).await;
        let w = c.add_worker(0).await;
        let api = c.nodes[0].http_addr();
        let name = format!("node{}", w + 1);
        let (wip, mip) = (c.nodes[w].ip.to_string(), c.nodes[0].ip.to_string());

        // Only the worker's TCP to the cluster port is dropped (as a refused certificate or a
        // firewall would): its gossip (UDP) still reaches the manager.
        let rule = ["INPUT", "-p", "tcp", "-s", &wip, "-d", &mip, "--dport", "2377", "-j", "DROP"];
        run("iptables", &[&["-A"], &rule[..]].concat());
        let cut = Instant::now();
        wait_for("the cut-off worker to be down", Duration::from_secs(8), || {
            let (api, name) = (api.clone(), name.clone());
            async move { (status(&api, &name).await? == "Down").then_some(()) }
        })
        .await;
        println!("worker without the cluster port marked down after {:?}", cut.elapsed());
        let members: Vec<serde_json::Value> = get_json(&api, "/v1/agent/members").await.unwrap();
        let member = members.iter().find(|m| m["Name"] == name.as_str()).expect("the worker in gossip");
        assert_eq!(member["Status"], 1, "gossip still hears it: {member}");
        let log = c.log_tail(0, 200);
        assert!(log.contains("node marked down: it gossips, but no heartbeat or Raft answer"), "{log}");

        // The port back: ready again.
        run("iptables", &[&["-D"], &rule[..]].concat());
        wait_for("the worker to be ready again", Duration::from_secs(10), || {
            let (api, name) = (api.clone(), name.clone());
            async move { (status(&api, &name).await? == "Ready").then_some(()) }
        })
        .await;
    });
}
