//! A 3-node Shoal cluster of real `shoal agent` processes on loopback (127.A.B.1 with `--init`, .2
//! and .3 joined as managers, so each node both manages and runs tasks, as Swarm's one node does),
//! data dirs in a temp dir, and the idle RSS/CPU of each process. The processes are stopped by PID
//! (SIGTERM, then SIGKILL after 10 s) when the cluster is dropped, and the temp dir goes with it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

const CLUSTER_PORT: u16 = 2377;
const HTTP_PORT: u16 = 8500;
const DOCKER_PORT: u16 = 2375;

struct NodeProc {
    name: String,
    ip: Ipv4Addr,
    child: Child,
    log: PathBuf,
}

/// The running cluster.
pub struct ShoalCluster {
    nodes: Vec<NodeProc>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// One process's footprint over an idle window.
pub struct Idle {
    pub name: String,
    pub pid: u32,
    pub rss_kib: u64,
    pub cpu_percent: f64,
}

impl ShoalCluster {
    /// Starts `nodes` nodes on 127.A.B.1, .2, ... with `--runtime runtime` and waits until all
    /// are voters and the leader's Docker API answers.
    pub async fn start(bin: &Path, base: [u8; 2], nodes: usize, runtime: &str) -> Result<ShoalCluster> {
        let ip = |i: usize| Ipv4Addr::new(127, base[0], base[1], i as u8 + 1);
        for i in 0..nodes {
            for port in [CLUSTER_PORT, HTTP_PORT, DOCKER_PORT] {
                TcpListener::bind(SocketAddrV4::new(ip(i), port))
                    .with_context(|| format!("{}:{port} is taken: pick another --shoal-ips", ip(i)))?;
            }
        }
        let dir = tempfile::Builder::new().prefix("shoal-bench-").tempdir()?;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        let mut c = ShoalCluster { nodes: Vec::new(), dir, http: http.clone() };
        let h = &http;
        c.spawn(bin, ip(0), runtime, &["--init"])?;
        let first = format!("{}:{HTTP_PORT}", ip(0));
        wait(&mut c.nodes, "the first node to lead", Duration::from_secs(30), || async {
            let l: String = get(h, &first, "/v1/status/leader").await?;
            (!l.is_empty()).then_some(())
        })
        .await?;
        let token = wait(&mut c.nodes, "the manager join token", Duration::from_secs(10), || async {
            let v: Value = get(h, &first, "/v1/cluster/join-token/manager").await?;
            v["Token"].as_str().map(str::to_string)
        })
        .await?;
        for i in 1..nodes {
            let join = format!("{}:{CLUSTER_PORT}", ip(0));
            c.spawn(bin, ip(i), runtime, &["--join", &join, "--token", &token])?;
            let want = format!("{}:{CLUSTER_PORT}", ip(i));
            wait(&mut c.nodes, &format!("node {} to be a voter", i + 1), Duration::from_secs(60), || async {
                let peers: Vec<String> = get(h, &first, "/v1/status/peers").await?;
                peers.contains(&want).then_some(())
            })
            .await?;
        }
        let api = c.docker_api().await?;
        wait(&mut c.nodes, "the leader's Docker API", Duration::from_secs(10), || async {
            let r = h.get(format!("http://{api}/_ping")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await?;
        eprintln!(
            "shoal: {} managers up ({}), --runtime {runtime}, Docker API of the leader at {api}",
            c.nodes.len(),
            c.nodes.iter().map(|n| format!("{} pid {}", n.ip, n.child.id())).collect::<Vec<_>>().join(", ")
        );
        Ok(c)
    }

    fn spawn(&mut self, bin: &Path, ip: Ipv4Addr, runtime: &str, mode: &[&str]) -> Result<()> {
        let name = format!("sbench{}", self.nodes.len() + 1);
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("agent")
            .args(mode)
            .arg("--data-dir")
            .arg(self.dir.path().join(&name))
            .args(["--bind", &ip.to_string(), "--name", &name, "--runtime", runtime])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group: a ctrl-c at the terminal reaches only the bench, which then
            // stops the nodes itself after putting the engine back.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.nodes.push(NodeProc { name, ip, child, log });
        Ok(())
    }

    /// The leader's Docker API address.
    pub async fn docker_api(&self) -> Result<SocketAddr> {
        for n in &self.nodes {
            let addr = format!("{}:{HTTP_PORT}", n.ip);
            if let Some(leader) = get::<String>(&self.http, &addr, "/v1/status/leader").await
                && let Some(l) = self.nodes.iter().find(|m| leader == format!("{}:{CLUSTER_PORT}", m.ip))
            {
                return Ok(SocketAddr::new(l.ip.into(), DOCKER_PORT));
            }
        }
        bail!("no node names a leader")
    }

    /// Each node's address and PID, in start order (the first is the `--init` node).
    pub fn nodes(&self) -> Vec<(Ipv4Addr, u32)> {
        self.nodes.iter().map(|n| (n.ip, n.child.id())).collect()
    }

    /// RSS at the end of, and CPU use over, `window` of each node process.
    pub async fn idle(&self, window: Duration) -> Result<Vec<Idle>> {
        let before: Vec<u64> = self.nodes.iter().map(|n| cpu_ticks(n.child.id())).collect::<Result<_>>()?;
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let secs = t0.elapsed().as_secs_f64();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut out = Vec::new();
        for (n, b) in self.nodes.iter().zip(before) {
            let pid = n.child.id();
            let ticks = cpu_ticks(pid)? - b;
            out.push(Idle {
                name: n.name.clone(),
                pid,
                rss_kib: rss_kib(pid)?,
                cpu_percent: ticks as f64 / hz / secs * 100.0,
            });
        }
        Ok(out)
    }

    /// Stops every node (SIGTERM, SIGKILL after 10 s) and removes the data dirs.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ShoalCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            // SAFETY: kill(2) on a PID this process spawned and has not reaped.
            unsafe { libc::kill(n.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in &mut self.nodes {
            while matches!(n.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(n.child.try_wait(), Ok(None)) {
                eprintln!("shoal: {} (pid {}) ignored SIGTERM for 10 s: SIGKILL", n.name, n.child.id());
                let _ = n.child.kill();
                let _ = n.child.wait();
            }
        }
        eprintln!("shoal: stopped the {} nodes, removing {}", self.nodes.len(), self.dir.path().display());
    }
}

async fn get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, addr: &str, path: &str) -> Option<T> {
    let r = http.get(format!("http://{addr}{path}")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Polls `f` until it returns `Some`; fails at `timeout`, or as soon as a node has exited.
async fn wait<T, F, Fut>(nodes: &mut [NodeProc], what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        for n in nodes.iter_mut() {
            if let Some(status) = n.child.try_wait()? {
                bail!(
                    "shoal node {} exited ({status}) while waiting for {what}; its log:\n{}",
                    n.name,
                    tail(&n.log, 30)
                );
            }
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; node 1's log:\n{}", tail(&nodes[0].log, 30));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("malformed VmRSS")?.parse()?)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc_files() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
    }
}
