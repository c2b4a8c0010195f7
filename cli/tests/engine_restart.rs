//! The Docker engine goes away and comes back: the agent keeps retrying with backoff, then picks
//! up where it was — running containers are adopted again (not restarted), work asked for while
//! the engine was away is done, and a container killed afterwards is still noticed.
//!
//! The engine "restarts" through a unix-socket proxy in front of the real one (`DOCKER_HOST` of the
//! node points at it): taking the proxy down cuts every connection, as an engine restart does,
//! without disturbing the machine's engine or anything else using it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::{shoal_bin, wait_for};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

/// A proxy to /var/run/docker.sock; dropping it (or `down`) closes the socket and every connection.
struct EngineProxy {
    path: PathBuf,
    tasks: Option<JoinSet<()>>,
}

impl EngineProxy {
    fn up(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("proxy socket");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        Self { path: path.to_path_buf(), tasks: Some(tasks) }
    }

    fn down(&mut self) {
        self.tasks.take(); // Aborts the accept loop, which drops (aborts) every connection.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.down();
    }
}

struct Node(Child, String);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // Remove what this node made on the engine.
        shoal_testkit::remove_engine_objects(std::slice::from_ref(&self.1));
    }
}

fn free_ip() -> String {
    for _ in 0..200 {
        let ip = format!("127.{}.{}.1", rand::random_range(1..=254u8), rand::random_range(1..=254u8));
        if std::net::TcpListener::bind((ip.as_str(), 2377)).is_ok()
            && std::net::TcpListener::bind((ip.as_str(), 8500)).is_ok()
        {
            return ip;
        }
    }
    panic!("no free loopback address");
}

fn docker(host: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "docker"]).args(args);
    match host {
        Some(h) => cmd.env("DOCKER_HOST", format!("tcp://{h}:2375")),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    let o = cmd.output().expect("docker CLI");
    assert!(o.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Running containers of the service: (ID, task ID).
fn running(service_id: &str) -> Vec<(String, String)> {
    let filter = format!("label=shoal.service.id={service_id}");
    docker(None, &["ps", "--no-trunc", "--filter", &filter, "--format", r#"{{.ID}} {{.Label "shoal.task.id"}}"#])
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_rides_out_an_engine_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let mut proxy = EngineProxy::up(&socket);
    let ip = free_ip();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(shoal_bin())
        .args(["agent", "--init", "--runtime", "docker", "--name", "solo", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--bind", &ip])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("SHOAL_LOG", "info,openraft=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let host = ip.clone();
    let node_id = wait_for("the node's Docker API", Duration::from_secs(30), || {
        let h = host.clone();
        async move {
            let o = Command::new("docker")
                .args(["node", "ls", "--format", "{{.ID}}"])
                .env("DOCKER_HOST", format!("tcp://{h}:2375"))
                .output()
                .ok()?;
            let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
            (o.status.success() && !id.is_empty()).then_some(id)
        }
    })
    .await;
    let _node = Node(child, node_id);
    let h = Some(ip.as_str());
    let service = docker(
        h,
        &[
            "service",
            "create",
            "--detach",
            "--replicas",
            "2",
            "--restart-delay",
            "0s",
            "--name",
            "ride",
            "shoal:local",
            "whoami",
            "--port",
            "8080",
        ],
    );
    let before = wait_for("2 running containers", Duration::from_secs(30), || {
        let r = running(&service);
        async move { (r.len() == 2).then_some(r) }
    })
    .await;

    // The engine goes away; meanwhile the service is scaled up.
    proxy.down();
    docker(h, &["service", "scale", "--detach", "ride=3"]);
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the agent to notice and retry", Duration::from_secs(15), || {
        let t = log_text();
        async move { t.contains("container runtime unavailable; retrying").then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running(&service).len(), 2, "nothing could start while the engine was away");

    // It comes back: the third task starts, the first two are the same containers as before.
    let back = Instant::now();
    let _proxy = EngineProxy::up(&socket);
    let after = wait_for("3 running containers after the engine came back", Duration::from_secs(30), || {
        let r = running(&service);
        async move { (r.len() == 3).then_some(r) }
    })
    .await;
    println!("the scaled-up task ran {:.2?} after the engine came back", back.elapsed());
    for c in &before {
        assert!(after.contains(c), "{c:?} kept running and was adopted again: {after:?}");
    }
    let ps = docker(h, &["service", "ps", "--format", "{{.Name}} {{.CurrentState}}", "ride"]);
    assert_eq!(ps.lines().filter(|l| l.contains("Running")).count(), 3, "{ps}");

    // The re-adopted containers are watched again: a kill is noticed and the task replaced.
    docker(None, &["kill", &before[0].0]);
    wait_for("the killed container's task to be replaced", Duration::from_secs(30), || {
        let r = running(&service);
        let killed = before[0].0.clone();
        async move { (r.len() == 3 && r.iter().all(|(id, _)| *id != killed)).then_some(()) }
    })
    .await;
    docker(h, &["service", "rm", "ride"]);
}
