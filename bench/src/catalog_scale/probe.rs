//! What the bench reads about the node besides its answers: the Raft counters of `/v1/agent/raft`,
//! the manager's VmRSS, a service's `X-Consul-Index`, and the established connections to the API
//! port (the proof that every watcher has its own connection before a flip).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use shoal_registry::cluster::status::RaftStats;

use super::Layout;

/// A handle on the node under test.
pub struct Probe {
    /// The API base URL, no trailing slash.
    pub api: String,
    http: reqwest::Client,
    pid: Option<u32>,
    /// How the API's local end reads in `/proc/net/tcp`: `0100007F:2134` for 127.0.0.1:8500, or
    /// `:2134` when the host is a name (then any address on that port counts).
    local_end: (String, String),
}

impl Probe {
    pub fn new(api: &str, pid: Option<u32>) -> Result<Probe> {
        let url = reqwest::Url::parse(api).with_context(|| format!("--api {api:?}"))?;
        let port = url.port_or_known_default().context("--api has no port")?;
        let addr = match url.host_str().and_then(|h| h.parse::<std::net::Ipv4Addr>().ok()) {
            Some(ip) => format!("{:08X}", u32::from_le_bytes(ip.octets())),
            None => String::new(),
        };
        let http = super::http_client(Duration::from_secs(10), 4)?;
        Ok(Probe { api: api.to_string(), http, pid, local_end: (addr, format!(":{port:04X}")) })
    }

    /// This manager's Raft state and log counters (the log index counts Raft entries).
    pub async fn raft(&self) -> Result<RaftStats> {
        let r = self.http.get(format!("{}/v1/agent/raft", self.api)).send().await?.error_for_status()?;
        Ok(r.json().await?)
    }

    /// The manager's VmRSS in KiB, `None` without `--pid`.
    pub fn rss_kib(&self) -> Result<Option<u64>> {
        let Some(pid) = self.pid else { return Ok(None) };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (is --pid the manager?)"))?;
        Ok(Some(vm_rss_kib(&status).context("no VmRSS line")?))
    }

    /// CPU time (user + system) the manager has used, in ms; `None` without `--pid`.
    pub fn cpu_ms(&self) -> Option<f64> {
        cpu_ms(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?)
    }

    /// `GET /v1/health/service/<name>`: its `X-Consul-Index` and the entries.
    pub async fn health(&self, name: &str) -> Result<(u64, Vec<Value>)> {
        let r = self.http.get(format!("{}/v1/health/service/{name}", self.api)).send().await?.error_for_status()?;
        let index = consul_index(r.headers()).context("no X-Consul-Index")?;
        Ok((index, r.json().await?))
    }

    /// Fails unless the node answers with the whole synthetic catalog.
    pub async fn check_loaded(&self, layout: Layout) -> Result<()> {
        let services: serde_json::Map<String, Value> =
            self.http.get(format!("{}/v1/catalog/services", self.api)).send().await?.error_for_status()?.json().await?;
        let ours = services.keys().filter(|k| k.starts_with("svc-")).count();
        let (_, entries) = self.health(&layout.service(0)).await?;
        let nodes: Vec<Value> =
            self.http.get(format!("{}/v1/catalog/nodes", self.api)).send().await?.error_for_status()?.json().await?;
        let sims = nodes.iter().filter(|n| n["Node"].as_str().is_some_and(|s| s.starts_with("sim-"))).count();
        if ours != layout.services || entries.len() != layout.instances || sims != layout.nodes.min(layout.total()) {
            bail!(
                "after the load the catalog has {ours} services, {} instances of {} and {sims} sim nodes",
                entries.len(),
                layout.service(0)
            );
        }
        Ok(())
    }

    /// Established TCP connections whose local end is the API's address: the server's side of
    /// every client connection (loopback, so both ends are in this network namespace's table).
    pub fn server_connections(&self) -> usize {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| established_on(&t, &self.local_end.0, &self.local_end.1))
            .sum()
    }

    /// This machine's client ends towards the API, by TCP state (`01` established, `02` SYN sent,
    /// ...): what a watcher whose connection never showed up on the server is doing.
    pub fn client_states(&self) -> String {
        let mut by_state = std::collections::BTreeMap::<String, usize>::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"].iter().filter_map(|p| std::fs::read_to_string(p).ok()) {
            for l in table.lines().skip(1) {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (Some(remote), Some(state)) = (f.get(2), f.get(3)) else { continue };
                if remote.strip_suffix(self.local_end.1.as_str()).is_some_and(|h| h.ends_with(&self.local_end.0)) {
                    *by_state.entry((*state).to_string()).or_default() += 1;
                }
            }
        }
        by_state.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// `X-Consul-Index` as a number.
pub fn consul_index(h: &reqwest::header::HeaderMap) -> Option<u64> {
    h.get("X-Consul-Index")?.to_str().ok()?.parse().ok()
}

/// This process's own VmRSS in KiB: reported beside the manager's, never added to it.
pub fn own_rss_kib() -> Option<u64> {
    vm_rss_kib(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// This process's own CPU time in ms, to show how much of the machine the load generator takes.
pub fn own_cpu_ms() -> Option<f64> {
    cpu_ms(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime of a `/proc/PID/stat` line, in ms. The fields are counted after the `)` that
/// ends the command name, which may itself hold spaces.
pub(crate) fn cpu_ms(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let (utime, stime): (u64, u64) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 * 1000.0 / hz)
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Rows of a `/proc/net/tcp{,6}` table in state ESTABLISHED (01) whose local end is `addr` (the
/// IPv4 word; in tcp6 the last word of a v4-mapped address) and `port` (`:HHHH`).
fn established_on(table: &str, addr: &str, port: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            let Some(host) = local.strip_suffix(port) else { return false };
            host.ends_with(addr) && state == "01"
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_tables() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:2134 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1\n\
            1: 0100007F:2134 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 2\n\
            2: 0100007F:D431 0100007F:2134 01 00000000:00000000 00:00000000 00000000  1000        0 3\n\
            3: 0100007F:2135 0100007F:D432 01 00000000:00000000 00:00000000 00000000  1000        0 4\n";
        assert_eq!(established_on(table, "0100007F", ":2134"), 1, "listening and client-side rows are not counted");
        assert_eq!(established_on(table, "0200007F", ":2134"), 0, "another address");
        assert_eq!(established_on(table, "", ":2135"), 1, "any address");
        let v6 = "  sl  local_address                         remote_address                        st\n\
            0: 0000000000000000FFFF00000100007F:2134 0000000000000000FFFF00000100007F:D431 01 0\n";
        assert_eq!(established_on(v6, "0100007F", ":2134"), 1, "a v4-mapped row");
        assert_eq!(vm_rss_kib("Name:\tshoal\nVmRSS:\t   22716 kB\n"), Some(22716));
        assert_eq!(vm_rss_kib("Name:\tshoal\n"), None);
        let stat = "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 1 1";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_ms(stat), Some(300.0 * 1000.0 / hz));
    }
}
