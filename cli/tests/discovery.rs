//! Discovery end to end on the real engine: a node (`--runtime docker`) puts its tasks' containers
//! and the containers `docker run` started with a service label into the catalog, with health, and
//! takes them out as they go; the real `docker` CLI drives it; `/v1/health/service` is the witness.
//!
//! Each test removes every container and network it made, also when it fails.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::{Cluster, ClusterOptions, get_json, wait_for};

fn docker(host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "docker"]).env_remove("DOCKER_CONTEXT").env_remove("DOCKER_TLS_VERIFY").args(args);
    match host {
        Some(h) => cmd.env("DOCKER_HOST", format!("tcp://{h}")),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().expect("the docker CLI (see scripts/install-test-deps.sh)")
}

fn ok(host: Option<&str>, args: &[&str]) -> String {
    let o = docker(host, args);
    assert!(
        o.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Stops the nodes, then removes what they and the test made, however the test ends.
struct Env {
    c: Cluster,
    ids: Vec<String>,
    /// Containers the test started itself with `docker run`.
    own: Vec<String>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for i in 0..self.c.nodes.len() {
            self.c.kill(i);
        }
        shoal_testkit::remove_engine_objects(&self.ids);
        for name in &self.own {
            let _ = docker(None, &["rm", "-f", name]);
        }
    }
}

/// `(service ID, aggregated health, address, port)` of each instance of `name`.
async fn health(addr: &str, name: &str) -> Vec<(String, String, String, u64)> {
    let entries: Vec<Value> = get_json(addr, &format!("/v1/health/service/{name}")).await.unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let worst = e["Checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["Status"].as_str().unwrap_or("critical").to_string())
                .max_by_key(|s| match s.as_str() {
                    "passing" => 0,
                    "warning" => 1,
                    _ => 2,
                })
                .unwrap_or_else(|| "passing".into());
            (
                e["Service"]["ID"].as_str().unwrap_or_default().to_string(),
                worst,
                e["Service"]["Address"].as_str().unwrap_or_default().to_string(),
                e["Service"]["Port"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn unique(name: &str) -> String {
    format!("{name}{}", std::process::id() % 100_000)
}

async fn one_node() -> Env {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "docker".into()] };
    let c = Cluster::start(1, opts).await;
    let addr = c.nodes[0].http_addr();
    let id = shoal_testkit::docker::first_node_id(&addr).await;
    Env { c, ids: vec![id], own: Vec::new() }
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_discovered_with_health_and_leave_before_they_stop() {
    let env = one_node().await;
    let host = format!("{}:2375", env.c.nodes[0].ip);
    let addr = env.c.nodes[0].http_addr();
    let web = unique("web");
    ok(
        Some(&host),
        &[
            "service",
            "create",
            "--detach",
            "--replicas",
            "3",
            "--name",
            &web,
            "--container-label",
            "shoal.check.http=/health",
            "--container-label",
            "shoal.check.interval=200ms",
            "shoal:local",
        ],
    );
    let passing = wait_for("3 passing instances", Duration::from_secs(60), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move {
            let h = health(&addr, &web).await;
            (h.len() == 3 && h.iter().all(|i| i.1 == "passing")).then_some(h)
        }
    })
    .await;
    println!("3 passing instances of {web}: {passing:?}");
    for (_, _, address, port) in &passing {
        assert!(
            !address.is_empty() && *port == 8080,
            "the container's address and the image's EXPOSE 8080: {passing:?}"
        );
    }

    // Flip one task's /health to 503: its instance goes critical; back to 200: passing again.
    let (victim, _, vaddr, vport) = passing[0].clone();
    let flip = |code: &'static str| {
        let url = format!("http://{vaddr}:{vport}/health");
        async move {
            shoal_testkit::http_client_builder().build().unwrap().post(url).body(code).send().await.unwrap();
        }
    };
    flip("503").await;
    wait_for("the flipped instance critical", Duration::from_secs(10), || {
        let (addr, web, victim) = (addr.clone(), web.clone(), victim.clone());
        async move { health(&addr, &web).await.iter().any(|i| i.0 == victim && i.1 == "critical").then_some(()) }
    })
    .await;
    flip("200").await;
    wait_for("the flipped instance passing again", Duration::from_secs(10), || {
        let (addr, web, victim) = (addr.clone(), web.clone(), victim.clone());
        async move { health(&addr, &web).await.iter().any(|i| i.0 == victim && i.1 == "passing").then_some(()) }
    })
    .await;

    // docker kill one container: its instance is critical or gone within a second.
    ok(None, &["kill", &victim]);
    let t0 = Instant::now();
    wait_for("the killed task's instance gone or critical", Duration::from_secs(10), || {
        let (addr, web, victim) = (addr.clone(), web.clone(), victim.clone());
        async move {
            let h = health(&addr, &web).await;
            h.iter().all(|i| i.0 != victim || i.1 == "critical").then_some(())
        }
    })
    .await;
    let took = t0.elapsed();
    println!("docker kill -> instance out of rotation in {took:?}");
    assert!(took < Duration::from_secs(1), "the killed task stayed passing for {took:?}");

    // Scale to 1: the instances of the removed tasks leave the catalog.
    ok(Some(&host), &["service", "scale", "--detach", &format!("{web}=1")]);
    wait_for("one instance left", Duration::from_secs(30), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move { (health(&addr, &web).await.len() == 1).then_some(()) }
    })
    .await;
    ok(Some(&host), &["service", "rm", &web]);
    wait_for("no instance left", Duration::from_secs(30), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move { health(&addr, &web).await.is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_run_containers_are_registered_and_never_left_stale() {
    let mut env = one_node().await;
    let addr = env.c.nodes[0].http_addr();
    let legacy = unique("legacy");
    let name = unique("legacy-c");
    let port = 18_000 + (std::process::id() % 1000) as u16;
    env.own.push(name.clone());
    let published = format!("127.0.0.1:{port}:8080");
    let label = format!("shoal.service={legacy}");
    ok(
        None,
        &["run", "-d", "--name", &name, "-l", &label, "-l", "SERVICE_TAGS=legacy,v1", "-p", &published, "shoal:local"],
    );
    let found = wait_for("the docker run container in the catalog", Duration::from_secs(20), || {
        let (addr, legacy) = (addr.clone(), legacy.clone());
        async move {
            let h = health(&addr, &legacy).await;
            (h.len() == 1 && h[0].1 == "passing").then_some(h)
        }
    })
    .await;
    assert_eq!((found[0].2.as_str(), found[0].3), ("127.0.0.1", u64::from(port)), "the published address: {found:?}");
    ok(None, &["rm", "-f", &name]);
    wait_for("the removed container gone from the catalog", Duration::from_secs(10), || {
        let (addr, legacy) = (addr.clone(), legacy.clone());
        async move { health(&addr, &legacy).await.is_empty().then_some(()) }
    })
    .await;

    // Kill the agent, remove the container while it is down, restart it: no stale entry.
    ok(None, &["run", "-d", "--name", &name, "-l", &label, "-p", &published, "shoal:local"]);
    wait_for("registered again", Duration::from_secs(20), || {
        let (addr, legacy) = (addr.clone(), legacy.clone());
        async move { (health(&addr, &legacy).await.len() == 1).then_some(()) }
    })
    .await;
    env.c.kill(0);
    ok(None, &["rm", "-f", &name]);
    env.c.restart(0);
    env.c.wait_leader(Duration::from_secs(30)).await;
    wait_for("no stale entry after the agent's restart", Duration::from_secs(20), || {
        let (addr, legacy) = (addr.clone(), legacy.clone());
        async move {
            let entries: Vec<Value> = get_json(&addr, &format!("/v1/health/service/{legacy}")).await?;
            entries.is_empty().then_some(())
        }
    })
    .await;
}

/// A worker keeps no Raft state: its agent registers its tasks and reports their checks through
/// the managers over the cluster port. When it goes down, its instances are critical at once
/// (`serfHealth`) and leave with their tasks when the orchestrator replaces them.
#[tokio::test(flavor = "multi_thread")]
async fn a_workers_tasks_are_discovered_through_the_managers() {
    let opts =
        ClusterOptions { agent_args: vec!["--runtime".into(), "docker".into(), "--down-window".into(), "2s".into()] };
    let mut c = Cluster::start(1, opts).await;
    c.add_worker(0).await;
    let addr = c.nodes[0].http_addr();
    let ids = wait_for("both node IDs", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move {
            let nodes: Vec<Value> = get_json(&addr, "/v1/nodes").await?;
            let ids: Vec<String> = nodes.iter().filter_map(|n| n["ID"].as_str().map(str::to_string)).collect();
            (ids.len() == 2).then_some(ids)
        }
    })
    .await;
    let env = Env { c, ids, own: Vec::new() };
    let host = format!("{}:2375", env.c.nodes[0].ip);
    let web = unique("wweb");
    ok(
        Some(&host),
        &[
            "service",
            "create",
            "--detach",
            "--replicas",
            "2",
            "--name",
            &web,
            "--container-label",
            "shoal.check.http=/health",
            "--container-label",
            "shoal.check.interval=500ms",
            "shoal:local",
        ],
    );
    let by_node = |entries: &[Value]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = entries
            .iter()
            .map(|e| {
                let passing = e["Checks"].as_array().into_iter().flatten().all(|c| c["Status"] == "passing");
                (
                    e["Node"]["Node"].as_str().unwrap_or_default().to_string(),
                    if passing { "passing" } else { "not passing" }.to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    wait_for("a passing instance on each node", Duration::from_secs(60), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move {
            let entries: Vec<Value> = get_json(&addr, &format!("/v1/health/service/{web}")).await?;
            let want = vec![("node1".to_string(), "passing".to_string()), ("node2".to_string(), "passing".to_string())];
            (by_node(&entries) == want).then_some(())
        }
    })
    .await;
    let mut env = env;
    env.c.kill(1);
    let t0 = Instant::now();
    wait_for("the down worker's instance critical or gone", Duration::from_secs(20), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move {
            let entries: Vec<Value> = get_json(&addr, &format!("/v1/health/service/{web}")).await?;
            by_node(&entries).iter().all(|(node, h)| node != "node2" || h != "passing").then_some(())
        }
    })
    .await;
    println!("worker killed -> its instance out of rotation after {:?} (down window 2 s)", t0.elapsed());
}
