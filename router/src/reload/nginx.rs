//! Nginx, supervised: `nginx -p RUNTIME/ -c CONFIG -e RUNTIME/error.log -g 'daemon off; pid …;'`
//! as a foreground child; reloads with SIGHUP to the master, confirmed by its worker PIDs.
//!
//! Why the worker PIDs: SIGHUP is all `nginx -s reload` does, and it says nothing back. A master
//! that took the new config forks new workers and tells the old ones to shut down (their title
//! becomes `worker process is shutting down` just before they close their listeners); a master
//! that refused it keeps its workers and writes `[emerg]` to the error log. The master keeps the
//! listening sockets across reloads, so no new connection is ever refused; busy keep-alive
//! connections of the old workers are reset (~17 of 32 per reload measured, `README.md`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::child::{self, POLL, Supervised};
use super::{ReloadError, Reloader, runtime_dir_for, shell_quote, tail};

/// How [`NginxMaster`] runs nginx.
#[derive(Debug, Clone)]
pub struct NginxOptions {
    /// The `nginx` binary (default `nginx`, found on PATH).
    pub binary: PathBuf,
    /// The prefix (`-p`) holding the error log, the pid file and the master's output (default
    /// [`runtime_dir_for`] the config). Relative paths in the config resolve against it.
    pub runtime_dir: Option<PathBuf>,
    /// How long `start` waits for the first worker.
    pub start_timeout: Duration,
    /// How long `reload` waits for new workers or a refusal (a `listen` conflict makes nginx
    /// retry `bind()` for 2.5 s before it gives up).
    pub reload_timeout: Duration,
    /// How long `stop` waits after SIGQUIT (graceful) and again after SIGTERM.
    pub stop_timeout: Duration,
}

impl Default for NginxOptions {
    fn default() -> Self {
        Self {
            binary: "nginx".into(),
            runtime_dir: None,
            start_timeout: Duration::from_secs(10),
            reload_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// A supervised nginx master (see the module docs). The config must not set `pid` or `daemon`
/// (they are given on the command line) and should set `error_log` to [`NginxMaster::error_log`]
/// or not at all, so refusals can be quoted. Dropping it kills the master and its workers.
pub struct NginxMaster {
    config: PathBuf,
    opts: NginxOptions,
    runtime_dir: PathBuf,
    error_log: PathBuf,
    master: Supervised,
    reloading: tokio::sync::Mutex<()>,
}

/// The `-g` directives: the master stays in the foreground and its pid file is ours.
fn globals(pid_file: &Path) -> String {
    format!("daemon off; pid \"{}\";", pid_file.display())
}

fn is_worker(cmdline: &str) -> bool {
    cmdline.contains("worker process") && !cmdline.contains("shutting down")
}

impl NginxMaster {
    /// Starts the master in the foreground and waits for its first worker. On failure the child
    /// is gone and the error carries the end of its logs.
    pub async fn start(config: &Path, opts: NginxOptions) -> Result<Self, ReloadError> {
        let config = child::absolute(config)?;
        let runtime_dir = match &opts.runtime_dir {
            Some(d) => child::absolute(d)?,
            None => runtime_dir_for(&config),
        };
        child::make_runtime_dir(&runtime_dir)?;
        let error_log = runtime_dir.join("error.log");
        let args = vec![
            "-p".into(),
            format!("{}/", runtime_dir.display()),
            "-c".into(),
            config.display().to_string(),
            "-e".into(),
            error_log.display().to_string(),
            "-g".into(),
            globals(&runtime_dir.join("nginx.pid")),
        ];
        let master = Supervised::spawn("nginx master", &opts.binary, &args, &runtime_dir.join("nginx.log"))?;
        let me = Self { config, opts, runtime_dir, error_log, master, reloading: tokio::sync::Mutex::new(()) };
        let deadline = Instant::now() + me.opts.start_timeout;
        loop {
            if let Some(status) = me.master.exited() {
                let mut err = me.master.not_running(&status, Some(&me.error_log));
                if let ReloadError::NotRunning { detail, .. } = &mut err
                    && detail.contains("directive is duplicate")
                {
                    detail.push_str(" (remove `pid` and `daemon` from the config: shoal passes them with -g)");
                }
                return Err(err);
            }
            if !me.workers().is_empty() {
                return Ok(me);
            }
            if Instant::now() >= deadline {
                let detail =
                    format!("no worker process appeared; error log: {}", tail(&child::read_from(&me.error_log, 0), 8));
                return Err(ReloadError::Unconfirmed { what: me.describe(), waited: me.opts.start_timeout, detail });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The master's PID (stable across reloads).
    pub fn pid(&self) -> u32 {
        self.master.pid()
    }

    /// The prefix directory (`-p`) with the logs and the pid file.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The error log given with `-e`, where refusals are read from.
    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// The PIDs of the current generation's workers (not those shutting down).
    pub fn workers(&self) -> Vec<u32> {
        child::children_of(self.master.pid()).into_iter().filter(|(_, c)| is_worker(c)).map(|(p, _)| p).collect()
    }

    /// `[emerg]` lines the logs gained since the offsets (error log, master output).
    fn emergencies(&self, offsets: (u64, u64)) -> Vec<String> {
        let mut text = child::read_from(&self.error_log, offsets.0);
        text.push_str(&child::read_from(self.master.log(), offsets.1));
        text.lines().filter(|l| l.contains("[emerg]")).map(str::to_string).collect()
    }
}

#[async_trait]
impl Reloader for NginxMaster {
    fn describe(&self) -> String {
        format!(
            "nginx master (pid {}, config {}, prefix {}/)",
            self.master.pid(),
            self.config.display(),
            self.runtime_dir.display()
        )
    }

    async fn reload(&self) -> Result<(), ReloadError> {
        let _one = self.reloading.lock().await;
        let what = format!("nginx reload of {}", self.config.display());
        if let Some(status) = self.master.exited() {
            return Err(self.master.not_running(&status, Some(&self.error_log)));
        }
        let before: Vec<(u32, String)> = child::children_of(self.master.pid());
        let before_all: HashSet<u32> = before.iter().map(|c| c.0).collect();
        let before_active: HashSet<u32> = before.iter().filter(|c| is_worker(&c.1)).map(|c| c.0).collect();
        let offsets = (child::log_len(&self.error_log), child::log_len(self.master.log()));
        let started = Instant::now();
        if !self.master.signal(libc::SIGHUP) {
            return Err(self.master.not_running("an unknown status", Some(&self.error_log)));
        }
        let deadline = started + self.opts.reload_timeout;
        let mut kids = before.clone();
        while Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
            if let Some(status) = self.master.exited() {
                return Err(self.master.not_running(&status, Some(&self.error_log)));
            }
            kids = child::children_of(self.master.pid());
            let new = kids.iter().any(|(p, c)| !before_all.contains(p) && is_worker(c));
            let old_active = kids.iter().any(|(p, c)| before_active.contains(p) && is_worker(c));
            if new && !old_active {
                tracing::debug!(
                    pid = self.master.pid(),
                    ms = started.elapsed().as_millis() as u64,
                    "nginx reload confirmed"
                );
                return Ok(());
            }
            let emerg = self.emergencies(offsets);
            // A `bind() to … failed` line is followed by retries (5 × 500 ms) and, if they all
            // fail, `still could not bind()`; any other [emerg] ends the reload.
            if !new
                && let Some(last) = emerg.last()
                && !last.contains("bind() to ")
            {
                let detail = format!("nginx kept its workers {:?}: {}", before_active, tail(&emerg.join("\n"), 6));
                return Err(ReloadError::Refused { what, detail });
            }
        }
        Err(ReloadError::Unconfirmed {
            what,
            waited: self.opts.reload_timeout,
            detail: format!(
                "workers before {before_active:?}, children now {kids:?}; error log: {}",
                tail(&child::read_from(&self.error_log, offsets.0), 6)
            ),
        })
    }

    fn check_command(&self) -> Option<String> {
        // A pid file of its own: `nginx -t` writes the pid file it is given.
        Some(format!(
            "{} -t -q -p {} -e {} -g {} -c {{}}",
            shell_quote(&self.opts.binary.display().to_string()),
            shell_quote(&format!("{}/", self.runtime_dir.display())),
            shell_quote(&self.runtime_dir.join("check.log").display().to_string()),
            shell_quote(&globals(&self.runtime_dir.join("check.pid"))),
        ))
    }

    async fn stop(&self) {
        // SIGQUIT: graceful (workers finish their requests), then TERM, then KILL the group.
        if let Some(status) = self.master.stop(libc::SIGQUIT, self.opts.stop_timeout).await {
            tracing::info!(pid = self.master.pid(), %status, "nginx master stopped");
        }
    }
}
