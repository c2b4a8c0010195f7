//! HAProxy in master-worker mode, supervised: `haproxy -W -S SOCK,mode,600 -f CONFIG` as a
//! foreground child; reloads through the master CLI, confirmed by `show proc`.
//!
//! Why master-worker: the master keeps the listening sockets and hands them to each new worker,
//! so no connection waiting in an accept queue is lost (the naive `-sf` restart drops ~2.5 per
//! reload at 6–7k new connections/s, see `README.md`). Why `show proc`: `reload` is asynchronous
//! and prints nothing; the master's table is the one place that says whether a new worker
//! generation took over (`reloads` +1, a new worker PID) or the load failed (`[failed: N]` +1).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::child::{self, POLL, Supervised};
use super::{ReloadError, Reloader, runtime_dir_for, shell_quote, tail};

/// How [`HaproxyMaster`] runs HAProxy.
#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    /// The `haproxy` binary (default `haproxy`, found on PATH).
    pub binary: PathBuf,
    /// Where the master CLI socket and the log go (default [`runtime_dir_for`] the config).
    pub runtime_dir: Option<PathBuf>,
    /// How long `start` waits for the first worker.
    pub start_timeout: Duration,
    /// How long `reload` waits for the master to confirm or refuse (the master CLI refuses
    /// connections for ~2 s after each reload on an idle box).
    pub reload_timeout: Duration,
    /// How long `stop` waits after the soft stop (SIGUSR1) and again after SIGTERM.
    pub stop_timeout: Duration,
    /// Refuse a reload whose config adds a TCP `bind` address that something else holds (HAProxy
    /// would pause every listener for ~2 s and then give up; `haproxy -c` does not see it).
    pub check_new_binds: bool,
}

impl Default for HaproxyOptions {
    fn default() -> Self {
        Self {
            binary: "haproxy".into(),
            runtime_dir: None,
            start_timeout: Duration::from_secs(10),
            reload_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(5),
            check_new_binds: true,
        }
    }
}

/// A supervised HAProxy master (see the module docs). Dropping it kills the master and its
/// workers (by the master's PID and process group); call [`Reloader::stop`] for a soft stop.
pub struct HaproxyMaster {
    config: PathBuf,
    opts: HaproxyOptions,
    runtime_dir: PathBuf,
    socket: PathBuf,
    master: Supervised,
    /// One reload at a time: confirmation compares `show proc` before and after.
    reloading: tokio::sync::Mutex<()>,
}

/// The master's `show proc` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProcTable {
    /// The master's reload counter (failed reloads included).
    pub reloads: u64,
    /// Failed reloads since the last successful one (a success resets it to 0).
    pub failed: u64,
    /// Current workers: PID and the number of reloads each has survived (0 = newest).
    pub workers: Vec<(u32, u64)>,
    /// Workers of older generations still draining.
    pub old_workers: Vec<u32>,
}

impl ProcTable {
    /// Parses `show proc` output; `None` if the master's line is missing.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut t = ProcTable::default();
        let mut master = false;
        let mut section = "";
        for line in text.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('#') {
                section = if s.trim() == "workers" {
                    "workers"
                } else if s.trim() == "old workers" {
                    "old"
                } else {
                    ""
                };
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(pid), Some(kind)) = (f.first().and_then(|p| p.parse::<u32>().ok()), f.get(1)) else { continue };
            match (*kind, section) {
                ("master", _) => {
                    master = true;
                    t.reloads = f.get(2)?.parse().ok()?;
                    let failed = line.split("[failed:").nth(1).and_then(|r| r.split(']').next());
                    t.failed = failed.and_then(|n| n.trim().parse().ok()).unwrap_or(0);
                }
                ("worker", "workers") => t.workers.push((pid, f.get(2).and_then(|r| r.parse().ok()).unwrap_or(0))),
                ("worker", "old") => t.old_workers.push(pid),
                _ => {}
            }
        }
        master.then_some(t)
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.workers.iter().map(|w| w.0).chain(self.old_workers.iter().copied())
    }
}

impl HaproxyMaster {
    /// Starts `haproxy -W -S RUNTIME/master.sock,mode,600 -f CONFIG` and waits until the master
    /// lists a worker. On failure the child is gone and the error carries the end of its log.
    pub async fn start(config: &Path, opts: HaproxyOptions) -> Result<Self, ReloadError> {
        let config = child::absolute(config)?;
        let runtime_dir = match &opts.runtime_dir {
            Some(d) => child::absolute(d)?,
            None => runtime_dir_for(&config),
        };
        child::make_runtime_dir(&runtime_dir)?;
        let socket = runtime_dir.join("master.sock");
        // sun_path holds 108 bytes with its NUL.
        if socket.as_os_str().len() > 100 {
            return Err(ReloadError::Refused {
                what: "haproxy start".into(),
                detail: format!(
                    "the master socket path {} is too long for a Unix socket; set a shorter runtime dir",
                    socket.display()
                ),
            });
        }
        let _ = std::fs::remove_file(&socket);
        let args = vec![
            "-W".into(),
            "-S".into(),
            format!("{},mode,600", socket.display()),
            "-f".into(),
            config.display().to_string(),
        ];
        let master = Supervised::spawn("haproxy master", &opts.binary, &args, &runtime_dir.join("haproxy.log"))?;
        let me = Self { config, runtime_dir, socket, master, opts, reloading: tokio::sync::Mutex::new(()) };
        let deadline = Instant::now() + me.opts.start_timeout;
        loop {
            if let Some(status) = me.master.exited() {
                return Err(me.master.not_running(&status, None));
            }
            if let Ok(t) = me.show_proc().await
                && !t.workers.is_empty()
            {
                return Ok(me);
            }
            if Instant::now() >= deadline {
                let detail =
                    format!("no worker listed by `show proc` on {}; log: {}", me.socket.display(), me.log_tail(0));
                return Err(ReloadError::Unconfirmed { what: me.describe(), waited: me.opts.start_timeout, detail });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The master's PID (stable across reloads: it re-executes itself).
    pub fn pid(&self) -> u32 {
        self.master.pid()
    }

    /// The master CLI socket (`show proc`, `reload`; `@1 show info` reaches the current worker).
    pub fn master_socket(&self) -> &Path {
        &self.socket
    }

    /// The directory holding the socket and `haproxy.log` (the master's and workers' stderr).
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// PIDs of the current workers and of older ones still draining, from `show proc`.
    pub async fn workers(&self) -> Result<(Vec<u32>, Vec<u32>), ReloadError> {
        let t = self.show_proc_until(Instant::now() + self.opts.reload_timeout).await?;
        Ok((t.workers.iter().map(|w| w.0).collect(), t.old_workers))
    }

    /// Sends one command on the master CLI and reads the answer (the master closes after one).
    pub async fn command(&self, command: &str) -> std::io::Result<String> {
        cli(&self.socket, command).await
    }

    async fn show_proc(&self) -> std::io::Result<ProcTable> {
        let text = cli(&self.socket, "show proc").await?;
        ProcTable::parse(&text)
            .ok_or_else(|| std::io::Error::other(format!("unexpected `show proc` answer: {}", tail(&text, 3))))
    }

    /// `show proc`, retried (the master refuses connections for a while after a reload).
    async fn show_proc_until(&self, deadline: Instant) -> Result<ProcTable, ReloadError> {
        loop {
            if let Some(status) = self.master.exited() {
                return Err(self.master.not_running(&status, None));
            }
            let err = match self.show_proc().await {
                Ok(t) => return Ok(t),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(ReloadError::Unconfirmed {
                    what: self.describe(),
                    waited: self.opts.reload_timeout,
                    detail: format!("the master CLI {} did not answer `show proc`: {err}", self.socket.display()),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn log_tail(&self, offset: u64) -> String {
        tail(&child::read_from(self.master.log(), offset), 8)
    }

    /// Why HAProxy refused: the `[ALERT]` lines and the verdict the reload added to the log.
    fn refusal(&self, offset: u64) -> String {
        let text = child::read_from(self.master.log(), offset);
        let lines: Vec<&str> =
            text.lines().filter(|l| l.contains("[ALERT]") || l.contains("Loading failure")).collect();
        if lines.is_empty() { tail(&text, 8) } else { tail(&lines.join("\n"), 10) }
    }
}

#[async_trait]
impl Reloader for HaproxyMaster {
    fn describe(&self) -> String {
        format!(
            "haproxy master (pid {}, config {}, master CLI {})",
            self.master.pid(),
            self.config.display(),
            self.socket.display()
        )
    }

    async fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.reloading.lock().await;
        let what = format!("haproxy reload of {}", self.config.display());
        let started = Instant::now();
        let deadline = started + self.opts.reload_timeout;
        if self.opts.check_new_binds {
            super::binds::check_new_binds(&self.config, self.master.pid(), &what)?;
        }
        let before = self.show_proc_until(deadline).await?;
        let offset = child::log_len(self.master.log());
        // `reload` is asynchronous: the master answers nothing, closes, and re-executes itself.
        loop {
            match send_reload(&self.socket).await {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(ReloadError::Unconfirmed {
                        what,
                        waited: self.opts.reload_timeout,
                        detail: format!("the master CLI {} refused `reload`: {e}", self.socket.display()),
                    });
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
        let mut last = before.clone();
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            if let Some(status) = self.master.exited() {
                return Err(self.master.not_running(&status, None));
            }
            let Ok(now) = self.show_proc().await else { continue };
            if now.reloads > before.reloads {
                if now.failed > before.failed {
                    let detail = format!(
                        "HAProxy kept the previous config (show proc: [failed: {}]): {}",
                        now.failed,
                        self.refusal(offset)
                    );
                    return Err(ReloadError::Refused { what, detail });
                }
                let new_worker = now.workers.iter().any(|(pid, _)| !before.pids().any(|p| p == *pid));
                if new_worker && now.failed == 0 {
                    tracing::debug!(
                        pid = self.master.pid(),
                        ms = started.elapsed().as_millis() as u64,
                        "haproxy reload confirmed"
                    );
                    return Ok(());
                }
            }
            last = now;
        }
        Err(ReloadError::Unconfirmed {
            what,
            waited: self.opts.reload_timeout,
            detail: format!("show proc before {before:?}, last {last:?}; log: {}", self.log_tail(offset)),
        })
    }

    /// `haproxy -c -f {}`, without `-q`: in 2.6 `-q` also hides the `[ALERT]` lines that say
    /// what is wrong, and the exit code (0 valid, 1 invalid) is the same.
    fn check_command(&self) -> Option<String> {
        Some(format!("{} -c -f {{}}", shell_quote(&self.opts.binary.display().to_string())))
    }

    async fn stop(&self) {
        // SIGUSR1: soft stop (workers finish their connections, bounded by hard-stop-after).
        if let Some(status) = self.master.stop(libc::SIGUSR1, self.opts.stop_timeout).await {
            tracing::info!(pid = self.master.pid(), %status, "haproxy master stopped");
        }
    }
}

/// Sends `reload` on the master CLI. Only a failure to deliver it is an error: once it is
/// written the master may close or reset the connection as it re-executes, and sending it again
/// would reload twice.
async fn send_reload(socket: &Path) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::UnixStream::connect(socket))
        .await
        .map_err(|_| std::io::Error::other("connect: no answer within 2 s"))??;
    s.write_all(b"reload\n").await?;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
    Ok(())
}

/// One master CLI command: connect, send, read until the master closes (bounded).
async fn cli(socket: &Path, command: &str) -> std::io::Result<String> {
    let talk = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        // The master answers once it sees the end of the input (as `socat` sends it).
        s.shutdown().await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), talk)
        .await
        .map_err(|_| std::io::Error::other("no answer within 2 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_WORKERS: &str = "#<PID>          <type>          <reloads>       <uptime>        <version>
22196           master          2 [failed: 1]   0d00h00m22s     2.6.12-1+deb12u4
# workers
22299           worker          0               0d00h00m18s     2.6.12-1+deb12u4
# old workers
22200           worker          1               0d00h00m40s     2.6.12-1+deb12u4
# programs
";

    #[test]
    fn show_proc_tables_parse() {
        let cases: [(&str, &str, Option<ProcTable>); 3] = [
            (
                "old and new",
                TWO_WORKERS,
                Some(ProcTable { reloads: 2, failed: 1, workers: vec![(22299, 0)], old_workers: vec![22200] }),
            ),
            (
                "fresh",
                "#<PID> <type> <reloads> <uptime> <version>\n7 master 0 [failed: 0] 0d 2.6\n# workers\n8 worker 0 0d 2.6\n# programs\n",
                Some(ProcTable { reloads: 0, failed: 0, workers: vec![(8, 0)], old_workers: vec![] }),
            ),
            ("not a table", "Unknown command: 'show'\n", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(ProcTable::parse(text), want, "{name}");
        }
    }
}
