//! The reference: Debian's `knotd` serving the static zone, in the foreground, with its config,
//! run dir, databases and zone in a temp dir of its own (no system service, no `/etc/knot`). It
//! runs as the user that starts it (root on this machine). Stopped by PID (SIGTERM, SIGKILL after
//! 5 s) when dropped, and the temp dir goes with it.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use super::client::Client;

/// A running `knotd`.
pub struct Knot {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

/// knotd's configuration: one zone from `zone_file`, nothing written back to it, no journal.
fn config(dir: &Path, addr: SocketAddr, udp_workers: Option<usize>) -> String {
    let workers = udp_workers.map_or(String::new(), |n| format!("    udp-workers: {n}\n"));
    format!(
        "server:\n    rundir: \"{d}/run\"\n    listen: {ip}@{port}\n{workers}\
         database:\n    storage: \"{d}/db\"\n\
         log:\n  - target: stderr\n    any: info\n\
         zone:\n  - domain: {domain}\n    storage: \"{d}\"\n    file: \"shoal.zone\"\n\
         \x20   zonefile-sync: -1\n    journal-content: none\n",
        d = dir.display(),
        ip = addr.ip(),
        port = addr.port(),
        domain = super::zone::DOMAIN,
    )
}

impl Knot {
    /// Writes `zone` and the config into a fresh temp dir, starts `bin` on `addr` and waits until
    /// it answers the zone's SOA.
    pub fn start(bin: &Path, addr: SocketAddr, zone: &str, udp_workers: Option<usize>) -> Result<Knot> {
        let dir = tempfile::Builder::new().prefix("shoal-bench-knot-").tempdir()?;
        for sub in ["run", "db"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        std::fs::write(dir.path().join("shoal.zone"), zone)?;
        let conf = dir.path().join("knot.conf");
        std::fs::write(&conf, config(dir.path(), addr, udp_workers))?;
        let log = std::fs::File::create(dir.path().join("knot.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, like the Shoal nodes: the bench stops it itself.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {} (install Debian's knot)", bin.display()))?;
        let mut knot = Knot { child, dir, addr };
        knot.wait_ready(Duration::from_secs(20))?;
        Ok(knot)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("knot.log")
    }

    /// knotd's log, for a failure report.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let apex = Name::from_str(super::zone::DOMAIN)?;
        let mut client = Client::new(self.addr, Duration::from_millis(200))?;
        loop {
            if let Ok(r) = client.query(&apex, RecordType::SOA)
                && r.msg.metadata.response_code == ResponseCode::NoError
                && !r.msg.answers.is_empty()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("knotd exited ({status}) before answering; its log:\n{}", self.log_tail(30));
            }
            if Instant::now() > deadline {
                bail!("knotd did not answer the SOA within {timeout:?}; its log:\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a PID this process spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!("knot: pid {} ignored SIGTERM for 5 s: SIGKILL", self.child.id());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_the_dir() {
        let c = config(Path::new("/tmp/k"), "127.0.77.2:8600".parse().unwrap(), Some(2));
        for want in [
            "    rundir: \"/tmp/k/run\"\n",
            "    listen: 127.0.77.2@8600\n",
            "    udp-workers: 2\n",
            "    storage: \"/tmp/k/db\"\n",
            "  - domain: shoal.\n",
            "    zonefile-sync: -1\n",
        ] {
            assert!(c.contains(want), "{want:?} in:\n{c}");
        }
        assert!(!config(Path::new("/tmp/k"), "127.0.77.2:53".parse().unwrap(), None).contains("udp-workers"));
    }
}
