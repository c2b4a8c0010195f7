//! The node's DNS server, queried with the real `dig` (Debian's bind9-dnsutils, installed by
//! scripts/install-test-deps.sh): a service of three tasks on the real engine answers A and SRV
//! with glue, a killed container's address and a failing task's address leave the answers, nodes
//! resolve, and names that do not exist get NXDOMAIN with the SOA.
//!
//! The test removes every container and network its node made, however it ends.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_testkit::{Cluster, ClusterOptions, get_json, http_client_builder, wait_for};

fn docker(host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "docker"]).env_remove("DOCKER_CONTEXT").env_remove("DOCKER_TLS_VERIFY").args(args);
    match host {
        Some(h) => cmd.env("DOCKER_HOST", format!("tcp://{h}")),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().expect("the docker CLI")
}

fn ok(host: Option<&str>, args: &[&str]) {
    let o = docker(host, args);
    assert!(o.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

/// `dig @IP -p 8600 ARGS` (one try, 2 s), its stdout.
fn dig(ip: &str, args: &[&str]) -> String {
    let o = Command::new("dig")
        .args([&format!("@{ip}"), "-p", "8600", "+tries=1", "+time=2"])
        .args(args)
        .output()
        .expect("dig (bind9-dnsutils; see scripts/install-test-deps.sh)");
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn short(ip: &str, name: &str) -> BTreeSet<String> {
    dig(ip, &["+short", name]).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

struct Env {
    c: Cluster,
    ids: Vec<String>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for i in 0..self.c.nodes.len() {
            self.c.kill(i);
        }
        shoal_testkit::remove_engine_objects(&self.ids);
    }
}

/// Instance address → container name (its service ID) of the passing instances.
async fn passing(addr: &str, name: &str) -> Vec<(String, String)> {
    let entries: Vec<Value> = get_json(addr, &format!("/v1/health/service/{name}?passing")).await.unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            (
                e["Service"]["Address"].as_str().unwrap_or_default().to_string(),
                e["Service"]["ID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dig_finds_a_service_and_follows_its_health() {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "docker".into()] };
    let c = Cluster::start(1, opts).await;
    let addr = c.nodes[0].http_addr();
    let ip = c.nodes[0].ip.to_string();
    let id = wait_for("the node's ID", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move {
            let nodes: Vec<Value> = get_json(&addr, "/v1/nodes").await?;
            nodes.first().and_then(|n| n["ID"].as_str().map(str::to_string))
        }
    })
    .await;
    let env = Env { c, ids: vec![id] };
    let host = format!("{ip}:2375");
    let web = format!("dweb{}", std::process::id() % 100_000);
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
    let instances = wait_for("3 passing instances", Duration::from_secs(60), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move {
            let p = passing(&addr, &web).await;
            (p.len() == 3).then_some(p)
        }
    })
    .await;
    let want: BTreeSet<String> = instances.iter().map(|(a, _)| a.clone()).collect();
    let fqdn = format!("{web}.service.shoal");
    let got = wait_for("dig returns the 3 addresses", Duration::from_secs(10), || {
        let got = short(&ip, &fqdn);
        let want = want.clone();
        async move { (got == want).then_some(got) }
    })
    .await;
    println!("$ dig +short {fqdn}\n{}", got.iter().cloned().collect::<Vec<_>>().join("\n"));

    // SRV, both forms: three records on the task port, each target with its address as glue.
    for name in [format!("_{web}._tcp.service.shoal"), fqdn.clone()] {
        let out = dig(&ip, &["+noall", "+answer", "+additional", "SRV", &name]);
        println!("$ dig SRV {name}\n{out}");
        let srv: Vec<&str> = out.lines().filter(|l| l.contains("\tSRV\t")).collect();
        assert_eq!(srv.len(), 3, "{out}");
        for line in &srv {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[6], "8080", "the task port: {line}");
            let target = f[7];
            assert!(out.lines().any(|l| l.starts_with(target) && l.contains("\tA\t")), "glue for {target} in:\n{out}");
        }
        let glue: BTreeSet<String> = out
            .lines()
            .filter(|l| l.contains("\tA\t"))
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        assert_eq!(glue, want, "{out}");
    }

    // The node's name, and names that do not exist.
    assert_eq!(short(&ip, "node1.node.shoal"), BTreeSet::from([ip.clone()]));
    let out = dig(&ip, &[&format!("nope{web}.service.shoal")]);
    assert!(out.contains("status: NXDOMAIN") && out.contains("SOA"), "{out}");
    assert_eq!(short(&ip, &format!("{web}.service.consul")), want, "the consul. alias");

    // A failing health check: its address leaves DNS.
    let (sick_addr, _) = instances[0].clone();
    http_client_builder()
        .build()
        .unwrap()
        .post(format!("http://{sick_addr}:8080/health"))
        .body("503")
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    wait_for("the failing task's address gone from DNS", Duration::from_secs(10), || {
        let got = short(&ip, &fqdn);
        let sick = sick_addr.clone();
        async move { (!got.contains(&sick) && got.len() == 2).then_some(()) }
    })
    .await;
    println!("health check fails -> address gone from DNS after {:?} (probe interval 200 ms)", t0.elapsed());

    // docker kill: its address is gone within a second.
    let (dead_addr, dead) = instances[1].clone();
    ok(None, &["kill", &dead]);
    let t0 = Instant::now();
    wait_for("the killed task's address gone from DNS", Duration::from_secs(10), || {
        let got = short(&ip, &fqdn);
        let dead = dead_addr.clone();
        async move { (!got.contains(&dead)).then_some(()) }
    })
    .await;
    let took = t0.elapsed();
    println!("docker kill -> address gone from DNS after {took:?}");
    assert!(took < Duration::from_secs(1), "the killed task stayed in DNS for {took:?}");
    ok(Some(&host), &["service", "rm", &web]);
    drop(env);
}
