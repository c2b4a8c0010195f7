//! openraft's state machine over [`State`], with snapshots kept durably in the same redb file.
//!
//! The state lives in memory behind a lock that is never held across an `.await`. After each applied
//! batch the applied index is published on the [`IndexWatch`], which is what every blocking reader
//! waits on.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftSnapshotBuilder, StorageError,
    StoredMembership,
};
use redb::{Database, ReadableDatabase};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::TypeConfig;
use crate::store::log_store::{META, io_err};
use crate::store::watch::IndexWatch;
use shoal_model::State;
use shoal_model::{CommandResult, NodeId, ShoalNode};

const KEY_SNAPSHOT: &str = "snapshot";

/// What the state machine keeps: the model's tables and what openraft needs to know of them. The
/// snapshot's bytes are this struct in bincode, which lays fields out one after another with no
/// framing, so they are the same bytes as format 1's single `State` struct with these two fields
/// first (see `datadir::FORMAT`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Machine {
    /// Last log entry applied.
    last_applied: Option<LogId<NodeId>>,
    /// Last membership config applied.
    membership: StoredMembership<NodeId, ShoalNode>,
    /// The tables.
    tables: State,
}

/// The snapshot of on-disk formats 1 and 2: the same fields up to the services, no catalog.
#[derive(Deserialize)]
struct MachineFormat2 {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, ShoalNode>,
    cluster: Option<shoal_model::ClusterInfo>,
    nodes: std::collections::BTreeMap<NodeId, shoal_model::NodeRecord>,
    removed: std::collections::BTreeSet<NodeId>,
    kv: shoal_model::kv::KvTable,
    services: shoal_model::services::ServiceTables,
}

impl Machine {
    /// Reads a snapshot of this format, or of formats 1 and 2 (which end before the catalog: it
    /// starts empty and fills as agents resync).
    fn decode(data: &[u8]) -> Result<Self, Box<bincode::ErrorKind>> {
        let mut m: Machine = match bincode::deserialize(data) {
            Ok(m) => m,
            Err(e) if matches!(&*e, bincode::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof) => {
                let old: MachineFormat2 = bincode::deserialize(data)?;
                Machine {
                    last_applied: old.last_applied,
                    membership: old.membership,
                    tables: State {
                        cluster: old.cluster,
                        nodes: old.nodes,
                        removed: old.removed,
                        kv: old.kv,
                        services: old.services,
                        ..State::default()
                    },
                }
            }
            Err(e) => return Err(e),
        };
        m.tables.index = m.last_applied.map_or(0, |l| l.index);
        Ok(m)
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, ShoalNode>,
    data: Vec<u8>,
}

struct Shared {
    state: RwLock<Machine>,
    db: Arc<Database>,
    current: Mutex<Option<StoredSnapshot>>,
    applied: watch::Sender<u64>,
    snapshots_built: AtomicU64,
}

/// The state machine handed to openraft; clones share the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// A read-only handle on the registry's state and its watch, for every reader in the process.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Shared>,
}

impl StateView {
    /// Runs `f` on the current state. Keep `f` short: writers wait while it runs.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.shared.state.read().expect("state lock").tables)
    }

    /// The watch on the applied index.
    pub fn watch(&self) -> IndexWatch {
        IndexWatch::new(self.shared.applied.subscribe())
    }
}

impl StateMachineStore {
    /// Opens the state machine, restoring the last snapshot stored in `db` if there is one.
    pub fn open(db: Arc<Database>) -> Result<Self, StorageError<NodeId>> {
        let mut state = Machine::default();
        let mut current = None;
        {
            let txn = db.begin_read().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
            let meta = txn.open_table(META).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
            if let Some(v) = meta.get(KEY_SNAPSHOT).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))? {
                let snap: StoredSnapshot =
                    bincode::deserialize(v.value()).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &*e))?;
                state = Machine::decode(&snap.data).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &*e))?;
                current = Some(snap);
            }
        }
        let (applied, _) = watch::channel(state.tables.index());
        Ok(Self {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                db,
                current: Mutex::new(current),
                applied,
                snapshots_built: AtomicU64::new(0),
            }),
        })
    }

    /// A read handle for API servers and other readers.
    pub fn view(&self) -> StateView {
        StateView { shared: self.shared.clone() }
    }

    async fn persist(&self, snap: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let db = self.shared.db.clone();
        let subject = ErrorSubject::Snapshot(Some(snap.meta.signature()));
        let bytes = bincode::serialize(&snap).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, &*e))?;
        tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(META)?.insert(KEY_SNAPSHOT, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, &e))?
        .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        *self.shared.current.lock().expect("snapshot lock") = Some(snap);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last_applied, membership) = {
            let state = self.shared.state.read().expect("state lock");
            let data =
                bincode::serialize(&*state).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, &*e))?;
            (data, state.last_applied, state.membership.clone())
        };
        let n = self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, n),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.persist(StoredSnapshot { meta: meta.clone(), data: data.clone() }).await?;
        tracing::info!(index = last_applied.map_or(0, |l| l.index), bytes = data.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, ShoalNode>), StorageError<NodeId>> {
        let state = self.shared.state.read().expect("state lock");
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let index = {
            let mut state = self.shared.state.write().expect("state lock");
            for entry in entries {
                let log_id = *entry.get_log_id();
                state.last_applied = Some(log_id);
                state.tables.index = log_id.index;
                let r = match entry.payload {
                    EntryPayload::Blank => CommandResult::Done,
                    EntryPayload::Normal(cmd) => state.tables.apply(log_id.index, &cmd),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(log_id), m);
                        CommandResult::Done
                    }
                };
                results.push(r);
            }
            state.tables.index()
        };
        self.shared.applied.send_replace(index);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ShoalNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut state = Machine::decode(&data)
            .map_err(|e| io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, &*e))?;
        // The snapshot's metadata is authoritative for what it covers.
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.tables.index = state.last_applied.map_or(0, |l| l.index);
        let data = bincode::serialize(&state)
            .map_err(|e| io_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, &*e))?;
        self.persist(StoredSnapshot { meta: meta.clone(), data }).await?;
        let index = state.tables.index();
        *self.shared.state.write().expect("state lock") = state;
        tracing::info!(index, snapshot_id = %meta.snapshot_id, "installed snapshot from the leader");
        self.shared.applied.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.shared.current.lock().expect("snapshot lock").clone();
        Ok(current.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
