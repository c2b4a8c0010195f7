//! Test harness for process-level tests: a cluster of real `shoal` processes on distinct loopback
//! addresses (127.A.B.1, .2, ... with the default ports, as real hosts would have), data dirs in a
//! temp dir, and faults (SIGKILL, SIGSTOP) on the PIDs the harness started — never by name.
//!
//! Every wait is `wait_for(predicate, timeout)`; there are no fixed sleeps. When a test panics the
//! nodes' logs are printed.

pub mod docker;
mod kv;
pub mod wrk;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use kv::{KvClient, KvError, KvPair};

/// The `shoal` binary under test: `$SHOAL_BIN`, else `target/debug/shoal` of this workspace.
pub fn shoal_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/shoal");
    assert!(bin.exists(), "{} not found: run `cargo build -p shoal` first or set SHOAL_BIN", bin.display());
    bin
}

/// Waits until `f` returns `Some`, checking again after each short pause; panics with `what` after
/// `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Options for a test cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Extra flags for every `shoal agent` (e.g. `--snapshot-threshold 100`). Without a
    /// `--runtime`, nodes run with `--runtime none`.
    pub agent_args: Vec<String>,
}

/// One node process.
pub struct Node {
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// Its data dir.
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Whether the node joined as a worker.
    pub worker: bool,
}

impl Node {
    /// `IP:8500`.
    pub fn http_addr(&self) -> String {
        format!("{}:8500", self.ip)
    }

    /// `IP:2377`.
    pub fn cluster_addr(&self) -> String {
        format!("{}:2377", self.ip)
    }

    /// Whether the process is running (started and not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process ID, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A cluster of `shoal` processes.
pub struct Cluster {
    /// The nodes, in creation order.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
    base: [u8; 3],
    options: ClusterOptions,
}

/// Picks a free 127.A.B.0/24 block for this test: every node's default ports must be free on it.
fn free_block() -> [u8; 3] {
    for _ in 0..200 {
        let a: u8 = rand::random_range(1..=254);
        let b: u8 = rand::random_range(1..=254);
        let free = (1..=6u8).all(|n| {
            let ip = Ipv4Addr::new(127, a, b, n);
            TcpListener::bind(SocketAddrV4::new(ip, 2377)).is_ok()
                && TcpListener::bind(SocketAddrV4::new(ip, 8500)).is_ok()
        });
        if free {
            return [127, a, b];
        }
    }
    panic!("no free loopback block found");
}

impl Cluster {
    /// Starts `n` managers: the first with `--init`, the others joining with the manager token.
    pub async fn start(n: usize, options: ClusterOptions) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            dir: tempfile::Builder::new().prefix("shoal-test-").tempdir().expect("temp dir"),
            base: free_block(),
            options,
        };
        c.spawn_node(&["--init"]);
        c.wait_leader(Duration::from_secs(15)).await;
        for _ in 1..n {
            c.add_manager().await;
        }
        c
    }

    fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(self.base[0], self.base[1], self.base[2], i as u8 + 1)
    }

    fn spawn_node(&mut self, mode: &[&str]) -> usize {
        let i = self.nodes.len();
        let ip = self.ip(i);
        let data_dir = self.dir.path().join(format!("node{}", i + 1));
        let log = self.dir.path().join(format!("node{}.log", i + 1));
        let mut node = Node { ip, data_dir, log, child: None, paused: false, worker: false };
        let mut args: Vec<String> = mode.iter().map(|s| s.to_string()).collect();
        args.extend(["--name".into(), format!("node{}", i + 1)]);
        self.launch(&mut node, &args);
        self.nodes.push(node);
        i
    }

    fn launch(&self, node: &mut Node, extra: &[String]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let mut cmd = Command::new(shoal_bin());
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--bind")
            .arg(node.ip.to_string())
            .args(extra)
            .args(&self.options.agent_args)
            // Tests that do not choose a runtime keep their tasks assigned (no containers).
            .args(if self.options.agent_args.iter().chain(extra).any(|a| a == "--runtime") {
                &[][..]
            } else {
                &["--runtime", "none"][..]
            })
            .env("SHOAL_LOG", "info,openraft=warn,hickory_server=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawn shoal"));
        node.paused = false;
    }

    /// Adds a manager that joins with the manager token through node 0 (or any running node).
    pub async fn add_manager(&mut self) -> usize {
        let via = self.nodes.iter().position(|n| n.is_running() && !n.worker).expect("a running manager");
        let token = self.token(via).await;
        let join = self.nodes[via].cluster_addr();
        let i = self.spawn_node(&["--join", &join, "--token", &token]);
        let addr = self.nodes[i].cluster_addr();
        let probe = self.nodes[via].http_addr();
        wait_for(&format!("node {} to be a voter", i + 1), Duration::from_secs(60), || {
            let (addr, probe) = (addr.clone(), probe.clone());
            async move {
                let peers: Vec<String> = get_json(&probe, "/v1/status/peers?stale").await?;
                peers.contains(&addr).then_some(())
            }
        })
        .await;
        i
    }

    /// Adds a worker that joins with the worker token through node `via`; returns its index once
    /// the managers list it as ready.
    pub async fn add_worker(&mut self, via: usize) -> usize {
        let token = self.token_for(via, "worker").await;
        let join = self.nodes[via].cluster_addr();
        let i = self.spawn_node(&["--join", &join, "--token", &token]);
        self.nodes[i].worker = true;
        let name = format!("node{}", i + 1);
        let probe = self.nodes[via].http_addr();
        wait_for(&format!("worker {name} to be ready"), Duration::from_secs(30), || {
            let (name, probe) = (name.clone(), probe.clone());
            async move {
                let nodes: Vec<serde_json::Value> = get_json(&probe, "/v1/nodes").await?;
                nodes.iter().any(|n| n["Name"] == name.as_str() && n["Status"] == "Ready").then_some(())
            }
        })
        .await;
        // The managers list it once its first heartbeat arrives, a moment before the worker has
        // stored its identity: a test that kills it right away must find a complete data dir.
        wait_for(&format!("worker {name} to be up"), Duration::from_secs(10), || {
            let up = self.log_tail(i, 50).contains(&format!("({name}) is up"));
            async move { up.then_some(()) }
        })
        .await;
        i
    }

    /// The manager join token, read from node `via`.
    pub async fn token(&self, via: usize) -> String {
        self.token_for(via, "manager").await
    }

    /// The join token for `role` (`manager` or `worker`), read from node `via`.
    pub async fn token_for(&self, via: usize, role: &str) -> String {
        let addr = self.nodes[via].http_addr();
        let path = format!("/v1/cluster/join-token/{role}");
        wait_for("join token", Duration::from_secs(10), || {
            let (addr, path) = (addr.clone(), path.clone());
            async move {
                let v: serde_json::Value = get_json(&addr, &path).await?;
                v["Token"].as_str().map(str::to_string)
            }
        })
        .await
    }

    /// The index of the node that running nodes agree is the leader, if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut seen = None;
        for n in self.nodes.iter().filter(|n| n.is_running() && !n.paused && !n.worker) {
            let addr: String = get_json(&n.http_addr(), "/v1/status/leader").await?;
            if addr.is_empty() {
                return None;
            }
            if seen.as_ref().is_some_and(|s: &String| *s != addr) {
                return None;
            }
            seen = Some(addr);
        }
        let addr = seen?;
        self.nodes.iter().position(|n| n.cluster_addr() == addr && n.is_running() && !n.paused)
    }

    /// Waits until the running nodes agree on a leader and returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for("an agreed leader", timeout, || self.leader()).await
    }

    /// A KV client on node `i`'s HTTP API.
    pub fn client(&self, i: usize) -> KvClient {
        KvClient::new(&self.nodes[i].http_addr())
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            if self.nodes[i].paused {
                signal(c.id(), libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Restarts node `i` from its data dir (after a kill).
    pub fn restart(&mut self, i: usize) {
        assert!(!self.nodes[i].is_running(), "node {} is still running", i + 1);
        let mut node = std::mem::replace(
            &mut self.nodes[i],
            Node {
                ip: Ipv4Addr::LOCALHOST,
                data_dir: PathBuf::new(),
                log: PathBuf::new(),
                child: None,
                paused: false,
                worker: false,
            },
        );
        self.launch(&mut node, &[]);
        self.nodes[i] = node;
    }

    /// Waits until node `i`'s process exits by itself and returns its exit status; `None` if it
    /// still runs after `timeout`.
    pub async fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.nodes[i].child.as_mut()?;
            if let Some(status) = child.try_wait().expect("wait on a node process") {
                self.nodes[i].child = None;
                self.nodes[i].paused = false;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOPs node `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, libc::SIGSTOP);
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONTs node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, libc::SIGCONT);
            self.nodes[i].paused = false;
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Where the cluster's files live.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a PID this harness spawned and still owns.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.nodes.len() {
                eprintln!("----- node{} log (tail) -----\n{}", i + 1, self.log_tail(i, 60));
            }
        }
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A reqwest client builder for tests. reqwest is built with `rustls-no-provider` in this
/// workspace (the cluster port speaks mutual TLS), so the process-wide crypto provider is installed
/// first, as every Shoal binary does.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder().no_proxy()
}

/// Installs the process-wide rustls crypto provider (ring), as every Shoal binary does. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// GETs JSON from `http://addr{path}` through the API's client; `None` on any failure.
pub async fn get_json<T: serde::de::DeserializeOwned>(addr: &str, path: &str) -> Option<T> {
    install_crypto_provider();
    let options = shoal_api::client::ClientOptions { timeout: Some(Duration::from_secs(2)), ..Default::default() };
    let client = shoal_api::client::ApiClient::with_options(addr, options).ok()?;
    client.get_json(path).await.ok().flatten()
}

/// Removes every container and network on the local Docker engine labelled with one of these
/// node IDs (`shoal.node.id`): what a test's nodes made. Stop the nodes first, or an agent may make
/// another container after the sweep.
pub fn remove_engine_objects(node_ids: &[String]) {
    let ids = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .env_remove("DOCKER_HOST")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    for node in node_ids {
        let filter = format!("label=shoal.node.id={node}");
        let kinds: [(&[&str], &[&str]); 2] =
            [(&["ps", "-aq"], &["rm", "-f"]), (&["network", "ls", "-q"], &["network", "rm"])];
        for (list, remove) in kinds {
            let found = ids(&[list, &["--filter", filter.as_str()]].concat());
            if !found.is_empty() {
                let _ = Command::new("docker").args(remove).args(&found).env_remove("DOCKER_HOST").output();
            }
        }
    }
}
