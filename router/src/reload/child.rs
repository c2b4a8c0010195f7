//! One supervised proxy master: a foreground child in its own process group, its output in a log
//! file, stopped and reaped by the PID this process started (never by name).
//!
//! Invariant: the child is reaped only after its process group was sent SIGKILL while the master
//! was still a zombie (or alive), so the group id cannot have been reused by the time it is
//! signalled: a zombie keeps its PID (and so its process group id) allocated.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ReloadError, tail};

/// How often a supervisor looks at its child or a proxy's state while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// A running proxy master this process spawned.
pub(crate) struct Supervised {
    /// `haproxy master`, `nginx master`: for messages.
    name: String,
    pid: u32,
    child: Mutex<Option<Child>>,
    log: PathBuf,
}

impl Supervised {
    /// Spawns `program args` in its own process group with stdin closed and stdout+stderr
    /// appended to `log`.
    pub(crate) fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self, ReloadError> {
        let out = File::options().create(true).append(true).open(log).map_err(|source| ReloadError::Spawn {
            program: format!("{} (its log {})", program.display(), log.display()),
            source,
        })?;
        let err =
            out.try_clone().map_err(|source| ReloadError::Spawn { program: program.display().to_string(), source })?;
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child =
            cmd.spawn().map_err(|source| ReloadError::Spawn { program: program.display().to_string(), source })?;
        Ok(Self { name: name.to_string(), pid: child.id(), child: Mutex::new(Some(child)), log: log.to_path_buf() })
    }

    /// The master's PID.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file the master's stdout and stderr go to.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the master has exited (then its group is killed and it is reaped).
    pub(crate) fn exited(&self) -> Option<String> {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let child = guard.as_mut()?;
        if !is_zombie_or_gone(self.pid) {
            return None;
        }
        // SAFETY: kill(2) with the group id of a process we spawned, still held by its zombie.
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| format!("unknown status ({e})"));
        *guard = None;
        Some(status)
    }

    /// A `NotRunning` error with the exit status and the end of the log (and of `extra_log`).
    pub(crate) fn not_running(&self, status: &str, extra_log: Option<&Path>) -> ReloadError {
        let mut detail = format!(
            "{} (pid {}) exited with {status}; its log {} ends: {}",
            self.name,
            self.pid,
            self.log.display(),
            tail(&read_from(&self.log, 0), 8)
        );
        if let Some(extra) = extra_log {
            detail.push_str(&format!("; {} ends: {}", extra.display(), tail(&read_from(extra, 0), 8)));
        }
        ReloadError::NotRunning { what: self.name.clone(), detail }
    }

    /// Sends `signal` to the master (not to its group), if it is still ours to signal.
    pub(crate) fn signal(&self, signal: i32) -> bool {
        let guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return false;
        }
        // SAFETY: kill(2) on the PID of our unreaped child.
        unsafe { libc::kill(self.pid as i32, signal) == 0 }
    }

    /// Stops the master: `graceful` first, SIGTERM after `grace`, then SIGKILL to the whole group
    /// after as long again; reaps it. Returns its exit status, `None` if it was already reaped.
    pub(crate) async fn stop(&self, graceful: i32, grace: Duration) -> Option<String> {
        for (sig, wait) in [(graceful, grace), (libc::SIGTERM, grace)] {
            if !self.signal(sig) {
                break;
            }
            let until = Instant::now() + wait;
            while Instant::now() < until && !is_zombie_or_gone(self.pid) {
                tokio::time::sleep(POLL).await;
            }
            if is_zombie_or_gone(self.pid) {
                break;
            }
        }
        self.kill_and_reap()
    }

    /// The blocking form of `stop` for `Drop`: SIGTERM, at most `grace`, then SIGKILL the group.
    pub(crate) fn stop_blocking(&self, grace: Duration) {
        if self.signal(libc::SIGTERM) {
            let until = Instant::now() + grace;
            while Instant::now() < until && !is_zombie_or_gone(self.pid) {
                std::thread::sleep(POLL);
            }
        }
        self.kill_and_reap();
    }

    fn kill_and_reap(&self) -> Option<String> {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = guard.take()?;
        // SAFETY: the group id is the PID of our unreaped child (alive or zombie), so it is ours;
        // this also ends old workers still draining.
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        Some(child.wait().map(|s: ExitStatus| s.to_string()).unwrap_or_else(|e| format!("unknown status ({e})")))
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop_blocking(Duration::from_secs(2));
    }
}

/// Whether `pid` has exited (a zombie) or is gone.
pub(crate) fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => matches!(stat_fields(&stat).first(), Some(&"Z") | Some(&"X")),
        Err(_) => true,
    }
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, pgrp, ...).
fn stat_fields(stat: &str) -> Vec<&str> {
    // The name is in parentheses and may itself contain spaces or ')'.
    stat.rfind(')').map(|i| stat[i + 1..].split_whitespace().collect()).unwrap_or_default()
}

/// The live (not zombie) children of `parent` with their command lines (NULs as spaces).
pub(crate) fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let f = stat_fields(&stat);
        if f.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(parent) || f.first() == Some(&"Z") {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
        out.push((pid, cmdline));
    }
    out.sort();
    out
}

/// The length of `path` (0 if missing): where to start reading what a reload adds to a log.
pub(crate) fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The text of `path` from byte `offset` on (empty if missing).
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// Creates `dir` (and parents), owner-only, for a proxy's sockets and logs.
pub(crate) fn make_runtime_dir(dir: &Path) -> Result<(), ReloadError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| ReloadError::Spawn { program: format!("mkdir {}", dir.display()), source })
}

/// `path` made absolute against the current directory, without resolving symlinks (the runner
/// renames over the path itself).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf, ReloadError> {
    std::path::absolute(path)
        .map_err(|source| ReloadError::Spawn { program: format!("resolve {}", path.display()), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_names() {
        let cases = [
            ("plain", "123 (nginx) S 1 123 123 0", vec!["S", "1", "123", "123", "0"]),
            ("paren and space", "7 (a) b) Z 99 7", vec!["Z", "99", "7"]),
            ("garbage", "nothing here", vec![]),
        ];
        for (name, stat, want) in cases {
            assert_eq!(stat_fields(stat), want, "{name}");
        }
    }

    #[tokio::test]
    async fn a_stopped_child_and_its_group_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // sh dies on TERM; its background sleep is in the same group and must die with it.
        let s =
            Supervised::spawn("test", Path::new("sh"), &["-c".into(), "sleep 30 & echo started; wait".into()], &log)
                .unwrap();
        let pid = s.pid();
        let until = Instant::now() + Duration::from_secs(5);
        while children_of(pid).is_empty() && Instant::now() < until {
            tokio::time::sleep(POLL).await;
        }
        let kids = children_of(pid);
        assert_eq!(kids.len(), 1, "{kids:?}");
        let sleeper = kids[0].0;
        assert!(s.exited().is_none());
        let status = s.stop(libc::SIGTERM, Duration::from_secs(2)).await;
        assert!(status.is_some());
        assert!(is_zombie_or_gone(pid), "the master is reaped");
        let until = Instant::now() + Duration::from_secs(2);
        while !is_zombie_or_gone(sleeper) && Instant::now() < until {
            tokio::time::sleep(POLL).await;
        }
        assert!(is_zombie_or_gone(sleeper), "the group's other members are killed");
        assert!(read_from(&log, 0).contains("started"));
        assert!(s.stop(libc::SIGTERM, Duration::from_secs(1)).await.is_none(), "a second stop is a no-op");
    }
}
