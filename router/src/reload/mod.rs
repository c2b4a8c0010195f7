//! Making a proxy serve the file a template was just written to.
//!
//! One trait, [`Reloader`], and its implementations: [`CommandReloader`] (any shell command, e.g.
//! `systemctl reload haproxy`; note that `nginx -s reload` exits before nginx has reloaded), and
//! the supervised proxies that `shoal router` starts itself and reloads without dropping a
//! request: [`HaproxyMaster`] (master-worker, confirmed by `show proc`) and [`NginxMaster`] (the
//! master's SIGHUP, confirmed by its worker PIDs). Every implementation passes the same conformance suite
//! (`conformance`, feature `testsuite`): a good config is served after `reload()` returns `Ok`, a
//! bad one is refused with the proxy's own words and the old config keeps serving.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

mod binds;
mod child;
#[cfg(feature = "testsuite")]
pub mod conformance;
pub mod haproxy;
pub mod nginx;

pub use haproxy::{HaproxyMaster, HaproxyOptions};
pub use nginx::{NginxMaster, NginxOptions};

/// Why a reload did not happen (the proxy keeps serving what it served before).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The program could not be started (not installed, not executable).
    #[error("cannot run {program}: {source} (is it installed and on PATH?)")]
    Spawn {
        /// What was run.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The reload command or the proxy refused the new config.
    #[error("{what} failed: {detail}")]
    Refused {
        /// What was asked (`command \`…\``, `haproxy reload`).
        what: String,
        /// Exit status and the last lines of its output or log.
        detail: String,
    },
    /// The proxy did not confirm the reload in time; it may still be loading.
    #[error("{what} was not confirmed within {waited:?}: {detail}")]
    Unconfirmed {
        /// What was asked.
        what: String,
        /// How long it was waited for.
        waited: Duration,
        /// What was seen last.
        detail: String,
    },
    /// A supervised proxy is not running (it exited; its log says why).
    #[error("{what} is not running: {detail}")]
    NotRunning {
        /// Which proxy.
        what: String,
        /// Its exit status and the end of its log.
        detail: String,
    },
}

impl ReloadError {
    /// The proxy (or the command) rejected the config: fix the config, retrying will not help.
    pub fn is_refused(&self) -> bool {
        matches!(self, ReloadError::Refused { .. })
    }

    /// Worth another `reload()` later: the proxy may still have been loading.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReloadError::Unconfirmed { .. })
    }

    /// The supervised proxy is gone: it must be started again (a reload cannot help).
    pub fn needs_restart(&self) -> bool {
        matches!(self, ReloadError::NotRunning { .. })
    }
}

/// Makes a proxy serve the config file now on disk.
#[async_trait]
pub trait Reloader: Send + Sync {
    /// What it reloads, for logs and the status page (`command \`nginx -s reload\``, `haproxy
    /// master (pid 1234)`).
    fn describe(&self) -> String;

    /// Reloads; `Ok` once the proxy took the new config (as far as this reloader can tell: a
    /// command's exit code, a supervised proxy's own confirmation). On `Err` the proxy keeps
    /// serving the config it had.
    async fn reload(&self) -> Result<(), ReloadError>;

    /// The command that validates a candidate config for this proxy (`{}` stands for the file),
    /// used when `--check` is not given.
    fn check_command(&self) -> Option<String> {
        None
    }

    /// Stops a proxy this reloader started (a no-op for commands).
    async fn stop(&self) {}
}

/// Reloads by running a shell command (`sh -c`), which must exit 0.
pub struct CommandReloader {
    command: String,
    timeout: Duration,
}

impl CommandReloader {
    /// Runs `command` with `sh -c` on every reload, waiting at most `timeout`.
    pub fn new(command: impl Into<String>, timeout: Duration) -> Self {
        Self { command: command.into(), timeout }
    }
}

#[async_trait]
impl Reloader for CommandReloader {
    fn describe(&self) -> String {
        format!("command `{}`", self.command)
    }

    async fn reload(&self) -> Result<(), ReloadError> {
        let what = self.describe();
        let out = run_shell(&self.command, self.timeout).await?;
        match out {
            ShellOutcome::Done { status, output } if status.success() => {
                let _ = output;
                Ok(())
            }
            ShellOutcome::Done { status, output } => {
                Err(ReloadError::Refused { what, detail: format!("{status}: {}", tail(&output, 10)) })
            }
            ShellOutcome::TimedOut => Err(ReloadError::Unconfirmed {
                what,
                waited: self.timeout,
                detail: "the command was still running and was killed".into(),
            }),
        }
    }
}

/// What a shell command did.
pub enum ShellOutcome {
    /// It exited: status and stdout+stderr.
    Done {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// stdout then stderr.
        output: String,
    },
    /// It ran past the timeout and was killed.
    TimedOut,
}

/// Runs `command` with `sh -c`, at most `timeout` (then kills it).
pub async fn run_shell(command: &str, timeout: Duration) -> Result<ShellOutcome, ReloadError> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ReloadError::Spawn { program: "sh".into(), source })?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => {
            let mut output = String::from_utf8_lossy(&o.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&o.stderr));
            Ok(ShellOutcome::Done { status: o.status, output })
        }
        Ok(Err(source)) => Err(ReloadError::Spawn { program: command.into(), source }),
        Err(_) => Ok(ShellOutcome::TimedOut),
    }
}

/// The last `n` non-empty lines of `text`, joined with " | " (for one-line error reports).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let t = lines[lines.len().saturating_sub(n)..].join(" | ");
    if t.is_empty() { "(no output)".into() } else { t }
}

/// `template` with every `{}` replaced by `path` (a check command's placeholder).
pub fn fill_placeholder(template: &str, path: &Path) -> String {
    template.replace("{}", &shell_quote(&path.display().to_string()))
}

/// `s` quoted for `sh` (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@,".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A directory a supervised proxy keeps its runtime files in (sockets, pid, logs).
pub fn runtime_dir_for(config: &Path) -> PathBuf {
    let name = config.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "proxy".into());
    config.with_file_name(format!(".{name}.run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_quoted() {
        let cases = [
            ("plain", "haproxy -c -f {}", "/etc/haproxy/h.cfg", "haproxy -c -f /etc/haproxy/h.cfg"),
            ("space", "nginx -t -c {}", "/tmp/a b/n.conf", "nginx -t -c '/tmp/a b/n.conf'"),
            ("quote", "cat {}", "/tmp/it's", "cat '/tmp/it'\\''s'"),
            ("twice", "diff {} {}", "/x", "diff /x /x"),
        ];
        for (name, t, p, want) in cases {
            assert_eq!(fill_placeholder(t, Path::new(p)), want, "{name}");
        }
    }

    #[test]
    fn tails_keep_the_end() {
        assert_eq!(tail("a\n\nb\nc\n", 2), "b | c");
        assert_eq!(tail("", 3), "(no output)");
    }

    #[tokio::test]
    async fn a_command_reloader_reports_the_exit_status_and_output() {
        let ok = CommandReloader::new("true", Duration::from_secs(5));
        ok.reload().await.unwrap();
        let bad = CommandReloader::new("echo no such config >&2; exit 3", Duration::from_secs(5));
        let e = bad.reload().await.unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("no such config"), "{e}");
        let slow = CommandReloader::new("sleep 5", Duration::from_millis(100));
        let e = slow.reload().await.unwrap_err().to_string();
        assert!(e.contains("not confirmed"), "{e}");
    }
}
