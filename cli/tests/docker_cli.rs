//! The real `docker` CLI (28.x, installed on the machine) drives a 3-manager Shoal cluster through
//! its Docker Engine API (`DOCKER_HOST=tcp://MANAGER:2375`). Nodes run the fake runtime.

use std::process::{Command, Output};
use std::time::Duration;

use shoal_testkit::{Cluster, ClusterOptions, wait_for};

/// Runs the docker CLI, bounded to 60 s (coreutils `timeout`) so a command that never converges
/// fails the test instead of hanging it.
fn docker(host: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["60", "docker"])
        .env("DOCKER_HOST", format!("tcp://{host}"))
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_TLS_VERIFY")
        .args(args)
        .output()
        .expect("the docker CLI (see scripts/install-test-deps.sh)")
}

fn out(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `docker service ps` rows: (name, node, desired, current) of tasks desired running.
fn running_per_node(host: &str, service: &str) -> Vec<usize> {
    let o = docker(host, &["service", "ps", "--format", "{{.Node}} {{.DesiredState}} {{.CurrentState}}", service]);
    let mut per = std::collections::BTreeMap::<String, usize>::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && f[1] == "Running" && f[2] == "Running" {
            *per.entry(f[0].to_string()).or_default() += 1;
        }
    }
    let mut counts: Vec<usize> = per.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_cli_drives_shoal() {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "fake".into()] };
    let c = Cluster::start(3, opts).await;
    let host = format!("{}:2375", c.nodes[0].ip);

    // docker node ls: three managers, one leader, `*` on the node we talk to.
    let o = docker(&host, &["node", "ls"]);
    let table = out(&o);
    println!("$ docker node ls\n{table}");
    assert!(o.status.success(), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(table.matches("Leader").count(), 1, "{table}");
    assert!(table.lines().any(|l| l.contains(" * ") && l.contains("node1")), "{table}");

    // docker service create, attached: the progress display runs until converged.
    let o = docker(
        &host,
        &[
            "service",
            "create",
            "--replicas",
            "5",
            "--name",
            "helloworld",
            "--update-monitor",
            "1s",
            "shoal:local",
            "whoami",
            "--port",
            "8080",
        ],
    );
    let text = out(&o);
    println!("$ docker service create ...\n{text}");
    assert!(o.status.success(), "{text}");
    assert!(text.contains("overall progress: 5 out of 5 tasks"), "{text}");
    assert!(text.contains("converged"), "{text}");
    let o = docker(&host, &["service", "ls"]);
    assert!(out(&o).contains("5/5"), "{}", out(&o));
    assert_eq!(running_per_node(&host, "helloworld"), vec![2, 2, 1]);

    // docker service scale.
    let o = docker(&host, &["service", "scale", "helloworld=9"]);
    assert!(o.status.success() && out(&o).contains("converged"), "{}", out(&o));
    assert_eq!(running_per_node(&host, "helloworld"), vec![3, 3, 3]);
    let o = docker(
        &host,
        &["service", "inspect", "--format", "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}}", "helloworld"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "helloworld 9", "{}", out(&o));

    // docker service update (rolling, 3 at a time) and docker service rollback. The CLI returns
    // when it sees the update completed; whether it printed "converged" first depends on whether
    // one of its 200 ms polls fell between the last task running and the end of the monitor
    // period, so the outcome is checked on the service itself.
    let o = docker(
        &host,
        &[
            "service",
            "update",
            "--env-add",
            "B=2",
            "--update-parallelism",
            "3",
            "--update-monitor",
            "1s",
            "--rollback-parallelism",
            "0",
            "--rollback-monitor",
            "1s",
            "helloworld",
        ],
    );
    let text = out(&o);
    println!("$ docker service update --env-add B=2 ...\n{text}");
    assert!(o.status.success(), "{text}");
    let o = docker(
        &host,
        &[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}} {{.Spec.TaskTemplate.ContainerSpec.Env}}",
            "helloworld",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "completed [B=2]", "{}", out(&o));
    let o = docker(&host, &["service", "ps", "--format", "{{.Name}} {{.DesiredState}}", "helloworld"]);
    let history = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        history.lines().filter(|l| l.ends_with("Shutdown")).count(),
        9,
        "the old tasks are kept as history:\n{history}"
    );
    let o = docker(&host, &["service", "rollback", "helloworld"]);
    let text = out(&o);
    println!("$ docker service rollback helloworld\n{text}");
    assert!(o.status.success(), "{text}");
    let o = docker(
        &host,
        &[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}} {{.Spec.TaskTemplate.ContainerSpec.Env}}",
            "helloworld",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "rollback_completed []", "{}", out(&o));

    // docker node update --availability drain: its tasks move, nothing new lands there.
    let o = docker(&host, &["node", "update", "--availability", "drain", "node3"]);
    assert!(o.status.success(), "{}", out(&o));
    wait_for("the drained node's tasks to move", Duration::from_secs(15), || {
        let counts = running_per_node(&host, "helloworld");
        async move { (counts == vec![5, 4] || counts == vec![4, 5]).then_some(()) }
    })
    .await;
    let o = docker(&host, &["node", "ls"]);
    assert!(out(&o).lines().any(|l| l.contains("node3") && l.contains("Drain")), "{}", out(&o));

    // Errors come back as the CLI prints them, and change nothing.
    let cases: [(&[&str], &str); 3] = [
        (&["service", "create", "--name", "helloworld", "--detach", "shoal:local"], "name conflicts"),
        (
            &["service", "create", "--name", "bad", "--detach", "--constraint", "node.bogus~~x", "shoal:local"],
            "expected one operator from ==, !=",
        ),
        (&["service", "inspect", "nope"], "no such service"),
    ];
    for (args, msg) in cases {
        let o = docker(&host, args);
        assert!(!o.status.success() && out(&o).to_lowercase().contains(&msg.to_lowercase()), "{args:?}: {}", out(&o));
    }

    // docker node demote / promote: node2 leaves the managers and comes back.
    let o = docker(&host, &["node", "demote", "node2"]);
    assert!(o.status.success(), "{}", out(&o));
    wait_for("node2 to be a worker", Duration::from_secs(20), || {
        let table = out(&docker(&host, &["node", "ls"]));
        async move {
            let line = table.lines().find(|l| l.contains("node2"))?.to_string();
            (!line.contains("Reachable") && !line.contains("Leader") && line.contains("Ready")).then_some(())
        }
    })
    .await;
    let o = docker(&host, &["node", "promote", "node2"]);
    assert!(o.status.success(), "{}", out(&o));
    wait_for("node2 to be a reachable manager again", Duration::from_secs(30), || {
        let table = out(&docker(&host, &["node", "ls"]));
        async move { table.lines().any(|l| l.contains("node2") && l.contains("Reachable")).then_some(()) }
    })
    .await;

    // docker service rm.
    let o = docker(&host, &["service", "rm", "helloworld"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = docker(&host, &["service", "ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "", "{}", out(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_cli_sees_restarts_rollbacks_global_services_and_a_dead_node() {
    let opts = ClusterOptions { agent_args: vec!["--runtime".into(), "fake".into()] };
    let mut c = Cluster::start(3, opts).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let host = format!("{}:2375", c.nodes[leader].ip);

    // A task that keeps failing follows its restart policy.
    let o = docker(
        &host,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "crash",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "1s",
            "--restart-max-attempts",
            "2",
            "fail:now",
        ],
    );
    assert!(o.status.success(), "{}", out(&o));
    wait_for("three failed attempts", Duration::from_secs(20), || {
        let ps = out(&docker(&host, &["service", "ps", "--format", "{{.CurrentState}}|{{.Error}}", "crash"]));
        async move {
            (ps.lines().filter(|l| l.starts_with("Failed") && l.contains("task: non-zero exit (1)")).count() == 3)
                .then_some(())
        }
    })
    .await;

    // Global mode: one task per node.
    let o = docker(
        &host,
        &["service", "create", "--mode", "global", "--name", "agent", "--update-monitor", "300ms", "shoal:local"],
    );
    assert!(o.status.success() && out(&o).contains("converged"), "{}", out(&o));
    let o = docker(&host, &["service", "ls", "--filter", "name=agent"]);
    assert!(out(&o).contains("global") && out(&o).contains("3/3"), "{}", out(&o));

    // A rolling update, two tasks at a time with a 1 s delay: 6 tasks take at least 2 delays.
    let o = docker(
        &host,
        &["service", "create", "--replicas", "6", "--name", "web", "--update-monitor", "300ms", "shoal:local"],
    );
    assert!(o.status.success(), "{}", out(&o));
    let started = std::time::Instant::now();
    let o = docker(
        &host,
        &["service", "update", "--image", "shoal:v2", "--update-parallelism", "2", "--update-delay", "1s", "web"],
    );
    let took = started.elapsed();
    assert!(o.status.success(), "{}", out(&o));
    assert!(took >= Duration::from_secs(2), "three batches with 1 s between them took {took:?}");
    let o = docker(
        &host,
        &[
            "service",
            "inspect",
            "--format",
            "{{.UpdateStatus.State}} {{.Spec.TaskTemplate.ContainerSpec.Image}}",
            "web",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "completed shoal:v2", "{}", out(&o));
    println!("rolling update of 6 tasks, 2 at a time, 1 s delay: {took:?}");

    // A failing update with --update-failure-action rollback goes back to the previous image.
    let o = docker(
        &host,
        &[
            "service",
            "update",
            "--image",
            "fail:v3",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "1s",
            "--rollback-parallelism",
            "0",
            "--rollback-monitor",
            "300ms",
            "web",
        ],
    );
    println!("$ docker service update --image fail:v3 --update-failure-action rollback web\n{}", out(&o));
    wait_for("the automatic rollback to complete", Duration::from_secs(30), || {
        let state = out(&docker(
            &host,
            &[
                "service",
                "inspect",
                "--format",
                "{{.UpdateStatus.State}} {{.Spec.TaskTemplate.ContainerSpec.Image}}",
                "web",
            ],
        ));
        async move { (state.trim() == "rollback_completed shoal:v2").then_some(()) }
    })
    .await;

    // Kill a node: its tasks are replaced on the others within the down window.
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let killed = std::time::Instant::now();
    c.kill(victim);
    let victim_name = format!("node{}", victim + 1);
    let last_ps = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let _print_on_failure = PrintOnDrop(last_ps.clone());
    wait_for("web's tasks to run elsewhere", Duration::from_secs(10), || {
        let ps = out(&docker(
            &host,
            &["service", "ps", "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}", "web"],
        ));
        let victim_name = victim_name.clone();
        *last_ps.lock().unwrap() = ps.clone();
        async move {
            let lines: Vec<&str> = ps.lines().collect();
            (lines.len() == 6 && lines.iter().all(|l| !l.starts_with(&victim_name) && l.contains("Running")))
                .then_some(())
        }
    })
    .await;
    println!("a killed node's tasks ran elsewhere {:?} after kill -9 (down window 5 s)", killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(8));
}

/// Prints the last `docker service ps` seen if the test fails while waiting.
struct PrintOnDrop(std::sync::Arc<std::sync::Mutex<String>>);

impl Drop for PrintOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("last docker service ps:\n{}", self.0.lock().map(|s| s.clone()).unwrap_or_default());
        }
    }
}
