//! One template's life: `SRC:DEST[:RELOAD_CMD]`, and each pass over it — read the source,
//! render, install (only a change, validated, atomically), reload; on any failure the last good
//! file and the running proxy stay as they were, and the error is kept for the status page.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::output::{InstallError, Installed, install, restore};
use crate::reload::{ReloadError, Reloader};
use crate::render::{Deps, RenderError, Rendered, render};
use crate::view::View;

/// `--template SRC:DEST[:RELOAD_CMD]` (the command may itself hold colons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The template file.
    pub source: PathBuf,
    /// Where the config goes.
    pub dest: PathBuf,
    /// A command run after each change (`sh -c`), if any.
    pub command: Option<String>,
}

impl std::str::FromStr for TemplateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let source = parts.next().unwrap_or_default();
        let dest = parts.next().unwrap_or_default();
        let command = parts.next().map(str::trim).filter(|c| !c.is_empty()).map(str::to_string);
        if source.is_empty() || dest.is_empty() {
            return Err(format!(
                "--template {s:?}: expected SRC:DEST[:RELOAD_CMD], e.g. templates/haproxy.cfg.j2:/etc/haproxy/haproxy.cfg"
            ));
        }
        Ok(TemplateSpec { source: source.into(), dest: dest.into(), command })
    }
}

/// Why a pass over a template failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template file could not be read.
    #[error("cannot read the template {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It did not render.
    #[error("the template does not render: {0}")]
    Render(#[from] RenderError),
    /// The config was not installed.
    #[error(transparent)]
    Install(#[from] InstallError),
    /// The proxy did not take it (the previous file was put back).
    #[error("the reload failed, so the previous config was put back: {0}")]
    Reload(#[from] ReloadError),
}

impl TemplateError {
    /// A short word for the status page and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            TemplateError::Read { .. } => "read",
            TemplateError::Render(_) => "render",
            TemplateError::Install(InstallError::Check { .. }) => "check",
            TemplateError::Install(InstallError::Write { .. }) => "write",
            TemplateError::Reload(_) => "reload",
        }
    }
}

/// What one pass did.
#[derive(Debug)]
pub enum Outcome {
    /// The output did not change.
    Unchanged,
    /// A new config is in place (and reloaded, if there is a reloader).
    Installed,
    /// Nothing changed on disk or in the proxy; the error says why.
    Failed(TemplateError),
}

/// A template's record, as the status page shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateStatus {
    /// The template file.
    pub source: String,
    /// The config file.
    pub dest: String,
    /// How it is reloaded.
    pub reloader: Option<String>,
    /// Renders attempted.
    pub renders: u64,
    /// Configs installed.
    pub installs: u64,
    /// Reloads that succeeded.
    pub reloads: u64,
    /// Passes that failed.
    pub failures: u64,
    /// The catalog index of the last pass.
    pub index: u64,
    /// Unix ms of the last pass, and of the last config installed.
    pub last_pass_ms: u64,
    /// Unix ms of the last install.
    pub last_install_ms: Option<u64>,
    /// The last pass's error (`kind: message`), `None` once a pass succeeds.
    pub error: Option<String>,
}

/// A template and what it needs for a pass.
pub struct Job {
    /// The spec.
    pub spec: TemplateSpec,
    /// The check command (`{}`: the candidate), if any.
    pub check: Option<String>,
    /// How the proxy is made to read the new file, if at all.
    pub reloader: Option<Arc<dyn Reloader>>,
    /// The KV reads of its last render.
    pub deps: Deps,
    /// Its record.
    pub status: TemplateStatus,
    /// The longest a check command may run.
    pub check_timeout: Duration,
}

impl Job {
    /// A job for `spec`.
    pub fn new(spec: TemplateSpec, check: Option<String>, reloader: Option<Arc<dyn Reloader>>) -> Job {
        let status = TemplateStatus {
            source: spec.source.display().to_string(),
            dest: spec.dest.display().to_string(),
            reloader: reloader.as_ref().map(|r| r.describe()),
            ..TemplateStatus::default()
        };
        Job { spec, check, reloader, deps: Deps::default(), status, check_timeout: Duration::from_secs(30) }
    }

    /// Renders against `view` (no side effects besides reading the template file).
    pub fn render(
        &mut self,
        view: &View,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Rendered, TemplateError> {
        let text = std::fs::read_to_string(&self.spec.source)
            .map_err(|source| TemplateError::Read { path: self.spec.source.clone(), source })?;
        let name = self.spec.source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let r = render(&name, &text, view, env)?;
        self.deps = r.deps.clone();
        Ok(r)
    }

    /// Installs and reloads a render's output (or records `rendered`'s error).
    pub async fn apply(&mut self, index: u64, rendered: Result<Rendered, TemplateError>) -> Outcome {
        self.status.renders += 1;
        self.status.index = index;
        self.status.last_pass_ms = now_ms();
        let outcome = match rendered {
            Err(e) => Outcome::Failed(e),
            Ok(r) => self.install_and_reload(&r.text).await,
        };
        match &outcome {
            Outcome::Failed(e) => {
                self.status.failures += 1;
                self.status.error = Some(format!("{}: {e}", e.kind()));
                tracing::error!(template = %self.spec.source.display(), dest = %self.spec.dest.display(), kind = e.kind(), error = %e, "template pass failed; the last good config stays");
            }
            Outcome::Installed => {
                self.status.error = None;
                self.status.installs += 1;
                self.status.last_install_ms = Some(now_ms());
                tracing::info!(template = %self.spec.source.display(), dest = %self.spec.dest.display(), index, "config installed");
            }
            Outcome::Unchanged => self.status.error = None,
        }
        outcome
    }

    async fn install_and_reload(&mut self, text: &str) -> Outcome {
        let check = self.check.clone().or_else(|| self.reloader.as_ref().and_then(|r| r.check_command()));
        let previous = match install(&self.spec.dest, text, check.as_deref(), self.check_timeout).await {
            Ok(Installed::Unchanged) => return Outcome::Unchanged,
            Ok(Installed::Written { previous }) => previous,
            Err(e) => return Outcome::Failed(e.into()),
        };
        let Some(reloader) = &self.reloader else { return Outcome::Installed };
        match reloader.reload().await {
            Ok(()) => {
                self.status.reloads += 1;
                Outcome::Installed
            }
            Err(e) => {
                // The proxy runs the old config: the file must say so too, or the next unrelated
                // change would install (and reload into) the refused one without a new check.
                if let Err(re) = restore(&self.spec.dest, previous.as_deref()) {
                    tracing::error!(dest = %self.spec.dest.display(), error = %re, "could not put the previous config back");
                }
                Outcome::Failed(e.into())
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        /// (SRC, DEST, CMD), or a piece of the error.
        type Want<'a> = Result<(&'a str, &'a str, Option<&'a str>), &'a str>;
        let cases: &[(&str, Want)] = &[
            ("a.j2:/etc/a.cfg", Ok(("a.j2", "/etc/a.cfg", None))),
            ("a.j2:b.cfg:systemctl reload haproxy", Ok(("a.j2", "b.cfg", Some("systemctl reload haproxy")))),
            ("a.j2:b.cfg:echo a:b", Ok(("a.j2", "b.cfg", Some("echo a:b")))),
            ("a.j2:b.cfg:", Ok(("a.j2", "b.cfg", None))),
            ("a.j2", Err("expected SRC:DEST")),
            (":b", Err("expected SRC:DEST")),
        ];
        for (input, want) in cases {
            let got = input.parse::<TemplateSpec>();
            match (got, want) {
                (Ok(s), Ok((src, dest, cmd))) => {
                    assert_eq!(
                        (s.source.to_str().unwrap(), s.dest.to_str().unwrap(), s.command.as_deref()),
                        (*src, *dest, *cmd),
                        "{input}"
                    )
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }
}
