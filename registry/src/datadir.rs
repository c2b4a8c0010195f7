//! A node's data dir: what it remembers about its node (`node.json`), where the Raft data lives
//! (`raft.redb`), and which on-disk format it was written in.
//!
//! Layout (format 2): `node.json` (identity), `raft.redb` (managers: Raft log, vote, snapshot),
//! `tls/` (CA, node certificate and key), `gossip.json` (gossip key and seeds), `managers.json`
//! (workers: the managers last heard of), `format.json` (this format's number).

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_model::{NodeId, Role};

use crate::error::Error;

/// The node's identity file.
pub const NODE_FILE: &str = "node.json";

/// The Raft data of a manager.
pub const DB_FILE: &str = "raft.redb";

/// What a data dir remembers about its node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Raft node ID.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// Advertised cluster address.
    pub cluster_addr: String,
    /// Advertised HTTP address.
    pub http_addr: String,
    /// Listen IP.
    pub bind_ip: IpAddr,
    /// Manager or worker (from the join token).
    #[serde(default = "manager_role")]
    pub role: Role,
    /// Advertised gossip address (UDP).
    #[serde(default)]
    pub gossip_addr: String,
}

fn manager_role() -> Role {
    Role::Manager
}

/// Whether `dir` already holds a node.
pub fn data_dir_in_use(dir: &Path) -> bool {
    dir.join(NODE_FILE).exists() || dir.join(DB_FILE).exists()
}

/// The on-disk format this build writes. Format 1 is every data dir written before formats were
/// recorded (no `format.json`); format 2 has the same bytes (the split of the model out of the
/// registry kept the snapshot's layout) plus `format.json`. A change to the bytes of the snapshot,
/// the log entries or the files above must bump this and say here how the older format is read.
/// Format 3 appends the catalog to the snapshot's tables and `Command::Catalog` to the log's
/// commands; a format 1 or 2 snapshot is read with an empty catalog (`store::state_machine`), and
/// their log entries decode unchanged (bincode numbers enum variants by position).
pub const FORMAT: u32 = 3;

/// The oldest format this build reads.
pub const OLDEST_READABLE: u32 = 1;

const FORMAT_FILE: &str = "format.json";

/// What `format.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FormatFile {
    /// The on-disk format number.
    pub format: u32,
    /// The version of the `shoal` that wrote it, for the operator.
    pub written_by: String,
}

/// Checks the data dir's format before anything in it is read, and stamps the current format on a
/// data dir that holds a readable older one. A format this build cannot read is refused with a
/// message naming both formats and what to do, and nothing on disk is touched.
///
/// An empty or missing dir passes (the node writes the stamp when it creates its files).
pub fn check_format(dir: &Path) -> Result<(), Error> {
    let ours = env!("CARGO_PKG_VERSION");
    let found: Option<FormatFile> = match std::fs::read(dir.join(FORMAT_FILE)) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            Error::BadRequest(format!(
                "data dir {}: {FORMAT_FILE} does not parse ({e}); this shoal ({ours}) writes on-disk format {FORMAT}. Restore the file from a backup, or move the data dir aside and join the node again with a token",
                dir.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::Internal(format!("cannot read {}: {e}", dir.join(FORMAT_FILE).display()))),
    };
    let format = match &found {
        Some(f) => f.format,
        None if data_dir_in_use(dir) => 1,
        None => return Ok(()),
    };
    if format > FORMAT {
        let by = found.map(|f| f.written_by).unwrap_or_default();
        return Err(Error::BadRequest(format!(
            "data dir {} is in on-disk format {format} (written by shoal {by}); this shoal ({ours}) reads formats {OLDEST_READABLE} to {FORMAT}. Run shoal {by} or newer on it, or move the data dir aside and join the node again with a token",
            dir.display()
        )));
    }
    if format < OLDEST_READABLE {
        return Err(Error::BadRequest(format!(
            "data dir {} is in on-disk format {format}, older than this shoal ({ours}) reads ({OLDEST_READABLE} to {FORMAT}); move it aside and join the node again with a token",
            dir.display()
        )));
    }
    if format < FORMAT {
        tracing::info!(data_dir = %dir.display(), from = format, to = FORMAT, "upgrading the data dir's on-disk format");
        stamp_format(dir)?;
    }
    Ok(())
}

/// Writes `format.json` with this build's format.
pub fn stamp_format(dir: &Path) -> Result<(), Error> {
    let file = FormatFile { format: FORMAT, written_by: env!("CARGO_PKG_VERSION").into() };
    crate::files::save_json(dir, FORMAT_FILE, &file, 0o644)
}

impl NodeIdentity {
    /// Reads `node.json` from `dir`; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, Error> {
        crate::files::load_json(dir, NODE_FILE)
    }

    /// Writes `node.json` durably.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        crate::files::save_json(dir, NODE_FILE, self, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    /// What a case expects: `Ok(format on disk after)`, or `Err(words the message must hold)`.
    type Want = Result<Option<u32>, &'static [&'static str]>;

    /// A case: its name, the files in the dir (name, body), what it expects.
    type Case = (&'static str, &'static [(&'static str, &'static str)], Want);

    #[test]
    fn formats() {
        // (name, files in the dir, Ok(format after) or Err(words the message must hold))
        let cases: &[Case] = &[
            ("empty dir", &[], Ok(None)),
            ("format 1: no stamp", &[("node.json", "{}")], Ok(Some(3))),
            (
                "format 2: restamped",
                &[("node.json", "{}"), ("format.json", r#"{"Format":2,"WrittenBy":"0.1.0"}"#)],
                Ok(Some(3)),
            ),
            ("current", &[("node.json", "{}"), ("format.json", r#"{"Format":3,"WrittenBy":"0.1.0"}"#)], Ok(Some(3))),
            (
                "newer",
                &[("node.json", "{}"), ("format.json", r#"{"Format":4,"WrittenBy":"9.9.9"}"#)],
                Err(&["format 4", "9.9.9", "formats 1 to 3", "join the node again"]),
            ),
            ("garbage", &[("node.json", "{}"), ("format.json", "{not json")], Err(&["does not parse", "format 3"])),
            ("zero", &[("node.json", "{}"), ("format.json", r#"{"Format":0,"WrittenBy":"x"}"#)], Err(&["format 0"])),
        ];
        for (name, files, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            for (f, body) in *files {
                write(dir.path(), f, body);
            }
            let before = std::fs::read(dir.path().join(FORMAT_FILE)).ok();
            let got = check_format(dir.path());
            let after: Option<FormatFile> =
                std::fs::read(dir.path().join(FORMAT_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
            match want {
                Ok(format) => {
                    assert!(got.is_ok(), "{name}: {got:?}");
                    assert_eq!(after.map(|f| f.format), *format, "{name}");
                }
                Err(words) => {
                    let msg = got.expect_err(name).to_string();
                    for w in *words {
                        assert!(msg.contains(w), "{name}: {msg:?} lacks {w:?}");
                    }
                    let now = std::fs::read(dir.path().join(FORMAT_FILE)).ok();
                    assert_eq!(before, now, "{name}: a refused dir is left as it was");
                }
            }
        }
    }
}
