//! Services through the HTTP API on real manager processes: the leader's orchestrator creates the
//! tasks and the scheduler spreads them (no container runtime yet: tasks stop at `assigned`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_testkit::{Cluster, ClusterOptions, get_json, http_client_builder, wait_for};

async fn post(addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let http = http_client_builder().timeout(Duration::from_secs(10)).build().unwrap();
    let r = http.post(format!("http://{addr}{path}")).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Tasks desired running per node ID (assigned ones only).
async fn placed(addr: &str, service: &str) -> Option<BTreeMap<String, usize>> {
    let filters = format!("{{\"service\":{{\"{service}\":true}},\"desired-state\":{{\"running\":true}}}}");
    let tasks: Vec<Value> = get_json(addr, &format!("/v1/tasks?filters={}", urlencode(&filters))).await?;
    let mut per = BTreeMap::new();
    for t in &tasks {
        if t["Status"]["State"] != "assigned" {
            return None;
        }
        *per.entry(t["NodeID"].as_str()?.to_string()).or_default() += 1;
    }
    Some(per)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn wait_spread(addr: &str, service: &str, want: &[usize]) {
    let want = want.to_vec();
    // 30 s: on a CI machine running other cluster tests alongside, 15 s ran out once.
    wait_for(&format!("{service} spread {want:?}"), Duration::from_secs(30), || async {
        let per = placed(addr, service).await?;
        let mut counts: Vec<usize> = per.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        (counts == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn services_are_spread_scaled_drained_and_validated() {
    let c = Cluster::start(3, ClusterOptions::default()).await;
    let api = c.nodes[1].http_addr();
    // All three ready first: tasks placed while a node is not are never moved onto it (Swarm's
    // rule), so [2, 2, 1] would never come.
    wait_for("3 ready nodes", Duration::from_secs(30), || async {
        let nodes: Vec<Value> = get_json(&api, "/v1/nodes").await?;
        let ready = nodes.iter().filter(|n| n["Status"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("ready")));
        (ready.count() == 3).then_some(())
    })
    .await;
    let spec = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "shoal:local"}}, "Mode": {"Replicated": {"Replicas": 5}}});
    let (status, created) = post(&api, "/v1/services/create", &spec).await;
    assert_eq!(status, 201, "{created}");
    let id = created["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 25);
    wait_spread(&api, "web", &[2, 2, 1]).await;

    // Scale to 30 by a read-modify-write of the whole spec, as the docker CLI does.
    let svc: Value = get_json(&api, "/v1/services/web").await.unwrap();
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let mut spec30 = svc["Spec"].clone();
    spec30["Mode"]["Replicated"]["Replicas"] = json!(30);
    spec30["Unknown"] = json!({"kept": true});
    let (status, body) = post(&api, &format!("/v1/services/{id}/update?version={version}"), &spec30).await;
    assert_eq!(status, 200, "{body}");
    wait_spread(&api, "web", &[10, 10, 10]).await;
    let svc: Value = get_json(&api, "/v1/services/web").await.unwrap();
    assert_eq!(svc["Spec"]["Unknown"], json!({"kept": true}), "fields Shoal does not know survive");
    let services: Vec<Value> = get_json(&api, "/v1/services?status=true").await.unwrap();
    assert_eq!(services[0]["ServiceStatus"]["DesiredTasks"], 30);

    // A stale version is refused and changes nothing.
    let (status, body) = post(&api, &format!("/v1/services/{id}/update?version={version}"), &spec).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("update out of sequence"), "{body}");

    // Drain a node: its tasks move, nothing new lands there.
    let drained = c.nodes[2].http_addr();
    let nodes: Vec<Value> = get_json(&api, "/v1/nodes").await.unwrap();
    let node3 =
        nodes.iter().find(|n| n["HttpAddress"] == drained.as_str()).unwrap()["ID"].as_str().unwrap().to_string();
    let (status, _) = post(&api, &format!("/v1/nodes/{node3}/update"), &json!({"Availability": "drain"})).await;
    assert_eq!(status, 200);
    wait_spread(&api, "web", &[15, 15]).await;
    assert!(!placed(&api, "web").await.unwrap().contains_key(&node3));

    // Bad input: a clear error and nothing stored.
    let cases = [
        (
            json!({"Name": "bad", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}, "Mode": {"Replicated": {"Replicas": -1}}}),
            400,
            "Replicas must be a whole number",
        ),
        (json!({"Name": "bad", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}, "Mode": {"Bogus": {}}}), 400, "Mode"),
        (
            json!({"Name": "bad", "TaskTemplate": {"ContainerSpec": {"Image": "i"}, "Placement": {"Constraints": ["node.bogus~~x"]}}}),
            400,
            "expected one operator from ==, !=",
        ),
        (
            json!({"Name": "bad", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}, "UpdateConfig": {"Delay": -1}}),
            400,
            "UpdateConfig.Delay",
        ),
        (json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}}), 409, "name conflicts"),
    ];
    for (body, want, msg) in cases {
        let (status, answer) = post(&api, "/v1/services/create", &body).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap_or_default().contains(msg), "{body}: {answer}");
    }
    let services: Vec<Value> = get_json(&api, "/v1/services").await.unwrap();
    assert_eq!(services.len(), 1, "nothing half-stored");
    let http = http_client_builder().build().unwrap();
    let r = http.get(format!("http://{api}/v1/services/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "service nope not found");

    // Removal: every task is set to desired remove.
    let r = http.delete(format!("http://{api}/v1/services/web")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tasks: Vec<Value> = get_json(&api, "/v1/tasks").await.unwrap();
    assert!(tasks.iter().all(|t| t["DesiredState"] == "remove"), "{} tasks", tasks.len());
}

/// Running tasks (desired running) per node ID.
async fn running(addr: &str, service: &str) -> Option<BTreeMap<String, usize>> {
    let filters = format!("{{\"service\":{{\"{service}\":true}},\"desired-state\":{{\"running\":true}}}}");
    let tasks: Vec<Value> = get_json(addr, &format!("/v1/tasks?filters={}", urlencode(&filters))).await?;
    let mut per = BTreeMap::new();
    for t in tasks.iter().filter(|t| t["Status"]["State"] == "running") {
        *per.entry(t["NodeID"].as_str()?.to_string()).or_default() += 1;
    }
    Some(per)
}

async fn wait_running(addr: &str, service: &str, want: &[usize], timeout: Duration) {
    let want = want.to_vec();
    wait_for(&format!("{service} running {want:?}"), timeout, || async {
        let per = running(addr, service).await?;
        let mut counts: Vec<usize> = per.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        (counts == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_run_on_the_fake_runtime_and_are_replaced_when_a_node_dies() {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "fake".into()] };
    let mut c = Cluster::start(3, opts).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let api = c.nodes[leader].http_addr();
    let spec = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "shoal:local"}}, "Mode": {"Replicated": {"Replicas": 5}}});
    let (status, created) = post(&api, "/v1/services/create", &spec).await;
    assert_eq!(status, 201, "{created}");
    wait_running(&api, "web", &[2, 2, 1], Duration::from_secs(15)).await;
    let svc: Value = get_json(&api, "/v1/services/web").await.unwrap();
    let mut spec30 = svc["Spec"].clone();
    spec30["Mode"]["Replicated"]["Replicas"] = json!(30);
    let id = svc["ID"].as_str().unwrap();
    let (status, body) =
        post(&api, &format!("/v1/services/{id}/update?version={}", svc["Version"]["Index"]), &spec30).await;
    assert_eq!(status, 200, "{body}");
    wait_running(&api, "web", &[10, 10, 10], Duration::from_secs(15)).await;
    let services: Vec<Value> = get_json(&api, "/v1/services?status=true").await.unwrap();
    assert_eq!(services[0]["ServiceStatus"]["RunningTasks"], 30);

    // A task that keeps failing follows its restart policy: on-failure, 1 s apart, 2 restarts.
    let crash = json!({"Name": "crash", "TaskTemplate": {"ContainerSpec": {"Image": "fail:now"},
        "RestartPolicy": {"Condition": "on-failure", "Delay": 1_000_000_000u64, "MaxAttempts": 2}},
        "Mode": {"Replicated": {"Replicas": 1}}});
    let (status, _) = post(&api, "/v1/services/create", &crash).await;
    assert_eq!(status, 201);
    let failed = || {
        let api = api.clone();
        async move {
            let tasks: Vec<Value> =
                get_json(&api, "/v1/tasks?filters=%7B%22service%22%3A%7B%22crash%22%3Atrue%7D%7D").await?;
            Some(tasks.iter().filter(|t| t["Status"]["State"] == "failed").count())
        }
    };
    wait_for("three failed attempts", Duration::from_secs(15), || async { (failed().await? == 3).then_some(()) }).await;
    let tasks: Vec<Value> =
        get_json(&api, "/v1/tasks?filters=%7B%22service%22%3A%7B%22crash%22%3Atrue%7D%7D").await.unwrap();
    assert!(
        tasks
            .iter()
            .all(|t| t["Status"]["Err"] == "task: non-zero exit (1); last log lines: started | failing on purpose"),
        "the exit code and the container's last log lines: {tasks:?}"
    );

    // Kill a follower's process: its tasks are replaced on the others within the down window.
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let killed = std::time::Instant::now();
    c.kill(victim);
    wait_running(&api, "web", &[15, 15], Duration::from_secs(10)).await;
    let took = killed.elapsed();
    println!("the dead node's 10 tasks were running elsewhere {took:?} after kill -9 (down window 5 s)");
    assert!(took < Duration::from_secs(7), "replaced after {took:?}");
    assert_eq!(failed().await, Some(3), "no more restarts after MaxAttempts");
}

fn shoal(api: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("timeout")
        .arg("60")
        .arg(shoal_testkit::shoal_bin())
        .args(["--http-addr", api])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shoal_service_commands() {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "fake".into()] };
    let c = Cluster::start(1, opts).await;
    let api = c.nodes[0].http_addr();
    let o = shoal(
        &api,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "--update-monitor",
            "200ms",
            "-e",
            "A=1",
            "shoal:local",
            "whoami",
            "--port",
            "8080",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("overall progress: 3 out of 3 tasks") && text(&o).contains("verify: Service web converged"),
        "{}",
        text(&o)
    );
    let o = shoal(&api, &["service", "ls"]);
    assert!(
        text(&o)
            .lines()
            .any(|l| l.contains("web") && l.contains("replicated") && l.contains("3/3") && l.contains("shoal:local")),
        "{}",
        text(&o)
    );
    let o = shoal(&api, &["service", "scale", "web=5"]);
    assert!(o.status.success() && text(&o).contains("overall progress: 5 out of 5 tasks"), "{}", text(&o));
    let o = shoal(
        &api,
        &[
            "service",
            "update",
            "--image",
            "shoal:v2",
            "--update-parallelism",
            "2",
            "--rollback-parallelism",
            "0",
            "--rollback-monitor",
            "200ms",
            "web",
        ],
    );
    assert!(o.status.success() && text(&o).contains("converged"), "{}", text(&o));
    let o = shoal(&api, &["service", "ps", "web"]);
    let ps = text(&o);
    assert_eq!(ps.lines().filter(|l| l.contains("shoal:v2") && l.contains("running")).count(), 5, "{ps}");
    assert_eq!(
        ps.lines().filter(|l| l.contains(" \\_ web.") && l.contains("shoal:local") && l.contains("shutdown")).count(),
        5,
        "{ps}"
    );
    let o = shoal(&api, &["service", "rollback", "web"]);
    assert!(o.status.success() && text(&o).contains("converged"), "{}", text(&o));
    let o = shoal(&api, &["service", "inspect", "web"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], "shoal:local");
    assert_eq!(v["UpdateStatus"]["State"], "rollback_completed");

    // Bad input: a clear error, a non-zero exit, nothing changed.
    let cases: [(&[&str], &str); 5] = [
        (&["service", "create", "--name", "x", "--update-delay", "soon", "i"], "invalid duration \"soon\""),
        (&["service", "create", "--name", "x", "--mode", "daemon", "i"], "invalid --mode \"daemon\""),
        (
            &["service", "create", "--name", "x", "--constraint", "node.role=manager", "i"],
            "expected one operator from ==, !=",
        ),
        (&["service", "scale", "web=-2"], "invalid replicas \"-2\""),
        (&["service", "inspect", "nope"], "service nope not found"),
    ];
    for (args, msg) in cases {
        let o = shoal(&api, args);
        assert!(!o.status.success() && text(&o).contains(msg), "{args:?}: {}", text(&o));
    }
    let o = shoal(&api, &["service", "rm", "web"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = shoal(&api, &["service", "ls", "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}

#[tokio::test(flavor = "multi_thread")]
async fn task_lists_answer_blocking_queries() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let api = c.nodes[0].http_addr();
    let spec = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "shoal:local"}}, "Mode": {"Replicated": {"Replicas": 1}}});
    let (status, created) = post(&api, "/v1/services/create", &spec).await;
    assert_eq!(status, 201, "{created}");
    let id = created["ID"].as_str().unwrap().to_string();
    wait_spread(&api, "web", &[1]).await;
    let filters = urlencode(&format!("{{\"service\":{{\"{id}\":true}}}}"));
    let http = http_client_builder().timeout(Duration::from_secs(20)).build().unwrap();
    let get = |index: u64, wait: &str| {
        let url = format!("http://{api}/v1/tasks?filters={filters}&index={index}&wait={wait}");
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            let index: u64 = r.headers()["X-Consul-Index"].to_str().unwrap().parse().unwrap();
            (index, r.json::<Vec<Value>>().await.unwrap().len())
        }
    };
    let (index, n) = get(0, "1s").await;
    assert_eq!(n, 1);
    // Nothing changes: the query waits out its wait and answers the same index.
    let start = std::time::Instant::now();
    assert_eq!(get(index, "1s").await, (index, 1));
    assert!(start.elapsed() >= Duration::from_millis(900), "it blocked for {:?}", start.elapsed());
    // A scale wakes a waiting query at once, with a newer index.
    let waiting = tokio::spawn(get(index, "15s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let svc: Value = get_json(&api, "/v1/services/web").await.unwrap();
    let version = svc["Version"]["Index"].as_u64().unwrap();
    let mut spec3 = svc["Spec"].clone();
    spec3["Mode"]["Replicated"]["Replicas"] = json!(3);
    let start = std::time::Instant::now();
    let (status, body) = post(&api, &format!("/v1/services/{id}/update?version={version}"), &spec3).await;
    assert_eq!(status, 200, "{body}");
    let (after, _) = waiting.await.unwrap();
    assert!(after > index, "index moved: {index} -> {after}");
    assert!(start.elapsed() < Duration::from_secs(5), "woken by the write, not the wait: {:?}", start.elapsed());
}
