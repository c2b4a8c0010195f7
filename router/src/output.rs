//! Installing a rendered config: only when it changed, validated first, atomically.
//!
//! ```text
//! text ─▶ same as DEST? ─yes─▶ Unchanged
//!          │no
//!          ▼
//!   DIR/.DEST.shoal-tmp (DEST's permissions, fsynced) ─▶ check command on it ─fail─▶ temp removed, Err
//!          │ok
//!          ▼
//!   rename over DEST (atomic: a reader sees the old file or the new one, never half of one)
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reload::{ShellOutcome, fill_placeholder, run_shell, tail};

/// What installing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// DEST already held this text: nothing was written.
    Unchanged,
    /// DEST now holds the text; `previous` is what it held before (`None`: it did not exist), to
    /// put back if the reload fails.
    Written {
        /// DEST's content before.
        previous: Option<Vec<u8>>,
    },
}

/// Why a config was not installed (DEST is as it was).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The file could not be written (the directory is missing or not writable, the disk is full).
    #[error("cannot write {path}: {source} (does the directory exist, and may this user write to it?)")]
    Write {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The check command refused the candidate.
    #[error("the check `{command}` refused the new config: {detail}")]
    Check {
        /// The command as run.
        command: String,
        /// Its exit status and the end of its output.
        detail: String,
    },
}

/// The temporary file next to `dest`.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "config".into());
    dest.with_file_name(format!(".{name}.shoal-tmp"))
}

/// Installs `text` at `dest` after `check` (a command, `{}` for the candidate file) accepts it.
pub async fn install(
    dest: &Path,
    text: &str,
    check: Option<&str>,
    timeout: Duration,
) -> Result<Installed, InstallError> {
    let previous = match std::fs::read(dest) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(InstallError::Write { path: dest.to_path_buf(), source }),
    };
    if previous.as_deref() == Some(text.as_bytes()) {
        return Ok(Installed::Unchanged);
    }
    let tmp = temp_path(dest);
    let mode = std::fs::metadata(dest).map(|m| m.permissions().mode()).unwrap_or(0o644);
    write_synced(&tmp, text.as_bytes(), mode).map_err(|source| InstallError::Write { path: tmp.clone(), source })?;
    if let Some(check) = check {
        let command = fill_placeholder(check, &tmp);
        let refused = match run_shell(&command, timeout).await {
            Ok(ShellOutcome::Done { status, .. }) if status.success() => None,
            Ok(ShellOutcome::Done { status, output }) => Some(format!("{status}: {}", tail(&output, 8))),
            Ok(ShellOutcome::TimedOut) => Some(format!("still running after {timeout:?}; killed")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(detail) = refused {
            let _ = std::fs::remove_file(&tmp);
            return Err(InstallError::Check { command, detail });
        }
    }
    std::fs::rename(&tmp, dest).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        InstallError::Write { path: dest.to_path_buf(), source }
    })?;
    Ok(Installed::Written { previous })
}

/// Puts `previous` back at `dest` (atomically), or removes `dest` if it did not exist before.
pub fn restore(dest: &Path, previous: Option<&[u8]>) -> std::io::Result<()> {
    match previous {
        None => std::fs::remove_file(dest),
        Some(bytes) => {
            let tmp = temp_path(dest);
            let mode = std::fs::metadata(dest).map(|m| m.permissions().mode()).unwrap_or(0o644);
            write_synced(&tmp, bytes, mode)?;
            std::fs::rename(&tmp, dest)
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn installs_only_changes_keeps_permissions_and_refuses_what_the_check_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("haproxy.cfg");
        let t = Duration::from_secs(5);
        assert_eq!(install(&dest, "a\n", None, t).await.unwrap(), Installed::Written { previous: None });
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(install(&dest, "a\n", None, t).await.unwrap(), Installed::Unchanged);
        assert_eq!(
            install(&dest, "b\n", Some("grep -q b {}"), t).await.unwrap(),
            Installed::Written { previous: Some(b"a\n".to_vec()) }
        );
        assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o640);
        let e = install(&dest, "c\n", Some("echo bad line 3 >&2; exit 1"), t).await.unwrap_err().to_string();
        assert!(e.contains("refused") && e.contains("bad line 3"), "{e}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "b\n", "a refused config leaves DEST alone");
        assert!(!temp_path(&dest).exists(), "the candidate is removed");
        restore(&dest, Some(b"a\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "a\n");
        let e = install(&dir.path().join("no/such/dir/x.cfg"), "x", None, t).await.unwrap_err().to_string();
        assert!(e.contains("cannot write") && e.contains("no/such/dir"), "{e}");
    }
}
