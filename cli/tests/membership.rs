//! Managers and workers formed with tokens; roles enforced by certificates.

use std::process::Command;
use std::time::{Duration, Instant};

use shoal_testkit::{Cluster, ClusterOptions, get_json, shoal_bin, wait_for};

#[tokio::test(flavor = "multi_thread")]
async fn three_managers_and_two_workers() {
    let mut c = Cluster::start(3, ClusterOptions::default()).await;
    let w1 = c.add_worker(1).await;
    let w2 = c.add_worker(2).await;

    // `shoal node ls` from a follower: five nodes, one leader, workers without a manager status.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let out =
        Command::new(shoal_bin()).args(["--http-addr", &c.nodes[follower].http_addr(), "node", "ls"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table.lines().count(), 6, "header + 5 nodes:\n{table}");
    assert_eq!(table.matches("Leader").count(), 1, "{table}");
    assert_eq!(table.matches("Reachable").count(), 2, "{table}");
    assert_eq!(table.matches("Ready").count(), 5, "{table}");
    let nodes: Vec<serde_json::Value> = get_json(&c.nodes[leader].http_addr(), "/v1/nodes").await.unwrap();
    let workers: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["Role"] == "worker").collect();
    assert_eq!(workers.len(), 2, "{nodes:?}");
    assert!(workers.iter().all(|w| w["ManagerStatus"] == ""));
    // Each node reports its Docker engine's version, as `docker version` shows it.
    let engine = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    let engine = engine.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    assert!(nodes.iter().all(|n| n["Resources"]["EngineVersion"] == engine.as_str()), "engine {engine:?}: {nodes:?}");
    assert!(table.contains("ENGINE VERSION"), "{table}");

    // Every node gossips (sealed with the cluster key): a follower hears all five, with their roles.
    let probe = c.nodes[follower].http_addr();
    wait_for("five live gossip members", Duration::from_secs(10), || {
        let probe = probe.clone();
        async move {
            let m: Vec<serde_json::Value> = get_json(&probe, "/v1/agent/members").await?;
            let managers = m.iter().filter(|m| m["Tags"]["role"] == "manager").count();
            (m.len() == 5 && managers == 3 && m.iter().all(|m| m["Status"] == 1)).then_some(())
        }
    })
    .await;

    // A worker's certificate cannot call manager-only RPCs.
    let tls = |f: &str| c.nodes[w1].data_dir.join("tls").join(f).to_string_lossy().into_owned();
    for path in ["/raft/append", "/raft/vote", "/cluster/write", "/cluster/join"] {
        let out = Command::new("curl")
            .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "x"])
            .args(["--cacert", &tls("ca.pem"), "--cert", &tls("node.pem"), "--key", &tls("node.key")])
            .arg(format!("https://{}{path}", c.nodes[leader].cluster_addr()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{path} with a worker certificate");
    }
    assert!(c.log_tail(leader, 300).contains("refused: a worker certificate cannot call a manager-only RPC"));

    // A worker's API refuses cluster requests and names a manager to use.
    let out = Command::new(shoal_bin())
        .args(["--http-addr", &c.nodes[w2].http_addr(), "kv", "put", "k", "v"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("this node is a worker") && err.contains("--http-addr 127."),
        "{err}"
    );

    // A stopped worker is marked down within the down window (5 s) + 1 s.
    c.kill(w2);
    let name = format!("node{}", w2 + 1);
    let killed = Instant::now();
    let probe = c.nodes[leader].http_addr();
    wait_for("the stopped worker to be down", Duration::from_secs(6), || {
        let (probe, name) = (probe.clone(), name.clone());
        async move {
            let nodes: Vec<serde_json::Value> = get_json(&probe, "/v1/nodes").await?;
            nodes.iter().any(|n| n["Name"] == name.as_str() && n["Status"] == "Down").then_some(())
        }
    })
    .await;
    println!("worker marked down {:?} after it was killed", killed.elapsed());

    // It comes back by itself after a restart, from its data dir.
    c.restart(w2);
    wait_for("the restarted worker to be ready", Duration::from_secs(10), || {
        let (probe, name) = (probe.clone(), name.clone());
        async move {
            let nodes: Vec<serde_json::Value> = get_json(&probe, "/v1/nodes").await?;
            nodes.iter().any(|n| n["Name"] == name.as_str() && n["Status"] == "Ready").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_inspect_update_and_rm() {
    let mut c = Cluster::start(1, ClusterOptions::default()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    let shoal = |args: &[&str]| {
        let mut all = vec!["--http-addr", api.as_str()];
        all.extend_from_slice(args);
        Command::new(shoal_bin()).args(all).output().unwrap()
    };
    let worker = format!("node{}", w + 1);

    // inspect by name and by ID prefix
    let out = shoal(&["node", "inspect", &worker]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["ID"].as_str().unwrap().to_string();
    assert_eq!((v["Role"].as_str(), v["Availability"].as_str()), (Some("worker"), Some("active")));
    assert!(
        v["Resources"]["Cpus"].as_u64().unwrap() >= 1 && v["Resources"]["MemoryBytes"].as_u64().unwrap() > 0,
        "{v}"
    );
    let out = shoal(&["node", "inspect", &id[..10]]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["Name"], worker.as_str());

    // update availability and labels
    let out = shoal(&[
        "node",
        "update",
        "--availability",
        "drain",
        "--label-add",
        "zone=a",
        "--label-add",
        "ssd=true",
        &worker,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = shoal(&["node", "update", "--label-rm", "ssd", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&shoal(&["node", "inspect", &worker]).stdout).unwrap();
    assert_eq!(v["Availability"], "drain");
    assert_eq!(v["Labels"], serde_json::json!({"zone": "a"}));
    let table = String::from_utf8_lossy(&shoal(&["node", "ls"]).stdout).into_owned();
    assert!(table.contains("AVAILABILITY") && table.contains("Drain"), "{table}");

    // bad input: each a clear error and a non-zero exit
    let cases: &[(&[&str], &str)] = &[
        (&["node", "update", "--availability", "bogus", "node1"], "invalid value 'bogus'"),
        (&["node", "inspect", "no-such-node"], "no such node: no-such-node"),
        (&["node", "update", "--availability", "pause", "no-such-node"], "no such node: no-such-node"),
        (&["node", "update", "--label-add", "novalue", "node1"], "use KEY=VALUE"),
        (&["node", "update", "node1"], "nothing to update"),
        (&["node", "rm", &worker], "is up: stop it first, or use --force"),
        (&["node", "rm", "node1"], "is up"),
        (&["node", "rm", "--force", "node1"], "is the leader"),
    ];
    for (args, msg) in cases {
        let out = shoal(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(msg), "{args:?}: {err}");
    }

    // rm --force removes it; its certificate is refused afterwards
    let out = shoal(&["node", "rm", "--force", &worker]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nodes: Vec<serde_json::Value> = get_json(&api, "/v1/nodes").await.unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    wait_for("the removed worker to be refused", Duration::from_secs(10), || {
        let (worker_log, manager_log) = (c.log_tail(w, 50), c.log_tail(0, 100));
        async move {
            (worker_log.contains("this node was removed from the cluster")
                && manager_log.contains("refused: the certificate belongs to a removed node"))
            .then_some(())
        }
    })
    .await;
    wait_for("the removed worker to stop by itself", Duration::from_secs(10), || {
        let log = c.log_tail(w, 20);
        async move { log.contains("the cluster refuses this node; stopping").then_some(()) }
    })
    .await;
    c.kill(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_is_marked_down_and_comes_back() {
    let mut c = Cluster::start(1, ClusterOptions::default()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    let name = format!("node{}", w + 1);
    let status = |want: &'static str| {
        let (api, name) = (api.clone(), name.clone());
        move || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let nodes: Vec<serde_json::Value> = get_json(&api, "/v1/nodes").await?;
                nodes.iter().any(|n| n["Name"] == name.as_str() && n["Status"] == want).then_some(())
            }
        }
    };
    c.pause(w);
    let paused = Instant::now();
    wait_for("the paused worker to be down", Duration::from_secs(6), status("Down")).await;
    let took = paused.elapsed();
    println!("SIGSTOPped worker marked down after {took:?} (down window 5 s)");
    assert!(took >= Duration::from_secs(3), "not marked down before the window: {took:?}");
    c.resume(w);
    let resumed = Instant::now();
    wait_for("the resumed worker to be ready", Duration::from_secs(5), status("Ready")).await;
    println!("SIGCONTed worker ready again after {:?}", resumed.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_worker_becomes_a_voting_manager() {
    let mut c = Cluster::start(1, ClusterOptions::default()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    let worker = format!("node{}", w + 1);
    let out = Command::new(shoal_bin()).args(["--http-addr", &api, "node", "promote", &worker]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("promoted to a manager"));

    let peers: Vec<String> = get_json(&api, "/v1/status/peers").await.unwrap();
    assert!(peers.contains(&c.nodes[w].cluster_addr()), "it votes: {peers:?}");
    let v: serde_json::Value = serde_json::from_slice(
        &Command::new(shoal_bin()).args(["--http-addr", &api, "node", "inspect", &worker]).output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!((v["Role"].as_str(), v["ManagerStatus"].as_str()), (Some("manager"), Some("Reachable")));

    // Its own API now serves the registry: a write through it is forwarded to the leader.
    c.nodes[w].worker = false;
    let client = c.client(w);
    wait_for("the promoted node's API to serve writes", Duration::from_secs(10), || {
        let client = client.clone();
        async move { (client.put("promoted", b"yes", "").await == Ok(true)).then_some(()) }
    })
    .await;
    assert_eq!(c.client(0).get("promoted", "").await, Ok(Some(b"yes".to_vec())));

    // Promoting a manager again, or a node that does not exist, is a clear error.
    for (node, msg) in [(worker.as_str(), "is already a manager"), ("ghost", "no such node: ghost")] {
        let out = Command::new(shoal_bin()).args(["--http-addr", &api, "node", "promote", node]).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(msg), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demoting_the_leader_hands_leadership_over_and_the_cluster_keeps_a_leader() {
    let mut c = Cluster::start(3, ClusterOptions::default()).await;
    let w = c.add_worker(0).await;
    let shoal =
        |api: &str, args: &[&str]| Command::new(shoal_bin()).arg("--http-addr").arg(api).args(args).output().unwrap();

    // Promote the worker: four managers.
    let out = shoal(&c.nodes[0].http_addr(), &["node", "promote", &format!("node{}", w + 1)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.nodes[w].worker = false;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let watcher = (0..4).find(|i| *i != leader).unwrap();

    // Throughout the demotion: a writer through a follower, and a watch on who leads.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, stop) = (c.client(watcher), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.put(&format!("during/{ok}"), b"v", "").await {
                    Ok(true) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    let leaderless = {
        let (api, stop) = (c.nodes[watcher].http_addr(), stop.clone());
        tokio::spawn(async move {
            let (mut longest, mut since): (Duration, Option<Instant>) = (Duration::ZERO, None);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let l: Option<String> = get_json(&api, "/v1/status/leader?stale").await;
                match l.filter(|l| !l.is_empty()) {
                    Some(_) => since = None,
                    None => {
                        let s = *since.get_or_insert_with(Instant::now);
                        longest = longest.max(s.elapsed());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            longest
        })
    };

    let started = Instant::now();
    let out = shoal(&c.nodes[leader].http_addr(), &["node", "demote", &format!("node{}", leader + 1)]);
    assert!(out.status.success(), "demote the leader: {}", String::from_utf8_lossy(&out.stderr));
    println!("demoting the leader took {:?}", started.elapsed());
    c.nodes[leader].worker = true;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (writes, failed) = writer.await.unwrap();
    let gap = leaderless.await.unwrap();
    println!(
        "during the demotion: {writes} writes succeeded, {} failed; longest leaderless view {gap:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "writes failed during the hand-over: {failed:?}");
    assert!(gap < Duration::from_secs(1), "the cluster was without a leader for {gap:?}");

    // A new leader among the three remaining managers; the old one is a worker, ready, and stays up.
    let new_leader = c.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(new_leader, leader);
    let api = c.nodes[new_leader].http_addr();
    let old = format!("node{}", leader + 1);
    wait_for("the demoted node to run as a ready worker", Duration::from_secs(15), || {
        let (api, old) = (api.clone(), old.clone());
        async move {
            let nodes: Vec<serde_json::Value> = get_json(&api, "/v1/nodes").await?;
            let row = nodes.iter().find(|n| n["Name"] == old.as_str())?;
            (row["Role"] == "worker" && row["Status"] == "Ready" && row["ManagerStatus"] == "").then_some(())
        }
    })
    .await;
    let out = shoal(&api, &["node", "ls"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    assert_eq!(table.matches("Leader").count(), 1, "{table}");
    assert_eq!(table.matches("Reachable").count(), 2, "{table}");
    let peers: Vec<String> = get_json(&api, "/v1/status/peers").await.unwrap();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(!peers.contains(&c.nodes[leader].cluster_addr()));
    assert!(c.log_tail(leader, 300).contains("demoted: running as a worker"), "{}", c.log_tail(leader, 30));
    // Its API is a worker's now.
    let out = shoal(&c.nodes[leader].http_addr(), &["kv", "put", "k", "v"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("this node is a worker"), "{out:?}");

    // Refusals: a worker; a demotion that would leave too few reachable managers for a quorum.
    let out = shoal(&api, &["node", "demote", &old]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already a worker"), "{out:?}");
    let down = (0..4).find(|i| *i != leader && *i != new_leader).unwrap();
    c.kill(down);
    wait_for("the killed manager to be down", Duration::from_secs(8), || {
        let (api, name) = (api.clone(), format!("node{}", down + 1));
        async move {
            let nodes: Vec<serde_json::Value> = get_json(&api, "/v1/nodes").await?;
            nodes.iter().any(|n| n["Name"] == name.as_str() && n["Status"] == "Down").then_some(())
        }
    })
    .await;
    let up = (0..4).find(|i| *i != leader && *i != new_leader && *i != down).unwrap();
    let out = shoal(&api, &["node", "demote", &format!("node{}", up + 1)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("a quorum needs 2"), "{err}");
}
