//! The durable Raft log: redb on disk, a mirror in memory, and group commit.
//!
//! Every write (appends, truncations, purges, the vote) goes to one writer thread in order. The thread
//! takes everything queued since its last commit and writes it in **one** redb transaction, so
//! concurrent client writes share one fsync. An append is acknowledged to openraft (its
//! `LogFlushed` callback) only after that transaction has committed durably.
//!
//! Reads are served from the in-memory mirror, which is updated before the write is queued: openraft
//! may read an entry it has just appended (to replicate it) before it is on disk, and the mirror keeps
//! that consistent. The mirror holds only the entries since the last purge, which snapshots bound.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::store::TypeConfig;
use shoal_model::NodeId;

/// Log entries by index, bincode-encoded.
pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small records: vote, committed, last purged log id, current snapshot.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_LAST_PURGED: &str = "last_purged";

/// Most operations folded into one transaction.
const MAX_BATCH: usize = 4096;

pub(crate) fn io_err<E: std::error::Error + 'static>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &E,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

enum Op {
    Append {
        entries: Vec<(u64, Vec<u8>)>,
        done: LogFlushed<TypeConfig>,
    },
    /// Delete `index >= from`.
    Truncate {
        from: u64,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Delete `index <= upto`, remember the purged log id.
    Purge {
        upto: u64,
        log_id: Vec<u8>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Write a META record; `done` is `None` for records that may ride on the next durable commit.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
}

impl Op {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Op::Meta { done: None, .. })
    }
}

#[derive(Default)]
struct Mirror {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

/// Counters of the log writer, to see group commit at work.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Durable (fsynced) commits.
    pub fsyncs: AtomicU64,
    /// `append` calls from openraft.
    pub appends: AtomicU64,
    /// Entries written.
    pub entries: AtomicU64,
}

/// The Raft log store. Cheap to clone; clones share the mirror and the writer.
#[derive(Clone)]
pub struct LogStore {
    mirror: Arc<RwLock<Mirror>>,
    writer: std_mpsc::Sender<Op>,
    stats: Arc<LogStats>,
}

impl LogStore {
    /// Opens (or creates) the log in `db` and starts its writer thread.
    pub fn open(db: Arc<Database>) -> Result<Self, StorageError<NodeId>> {
        Self::open_with(db, true)
    }

    /// Like [`LogStore::open`]; with `fsync == false` nothing is ever made durable. That is unsafe
    /// (acknowledged writes are lost on a crash) and exists only so tests can prove that the crash
    /// tests detect such a loss, like etcd's `--unsafe-no-fsync`.
    pub fn open_with(db: Arc<Database>, fsync: bool) -> Result<Self, StorageError<NodeId>> {
        let mut mirror = Mirror::default();
        {
            let txn = db.begin_write().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            txn.open_table(LOGS).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            txn.open_table(META).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            txn.commit().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        }
        let rerr = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, AnyError::error(e.to_string())).into()
        };
        let txn = db.begin_read().map_err(|e| rerr(&e))?;
        let logs = txn.open_table(LOGS).map_err(|e| rerr(&e))?;
        for row in logs.iter().map_err(|e| rerr(&e))? {
            let (k, v) = row.map_err(|e| rerr(&e))?;
            let entry: Entry<TypeConfig> = bincode::deserialize(v.value()).map_err(|e| rerr(&*e))?;
            mirror.entries.insert(k.value(), entry);
        }
        let meta = txn.open_table(META).map_err(|e| rerr(&e))?;
        let get = |key: &str| -> Result<Option<Vec<u8>>, StorageError<NodeId>> {
            Ok(meta.get(key).map_err(|e| rerr(&e))?.map(|v| v.value().to_vec()))
        };
        if let Some(v) = get(KEY_VOTE)? {
            mirror.vote = Some(bincode::deserialize(&v).map_err(|e| rerr(&*e))?);
        }
        if let Some(v) = get(KEY_LAST_PURGED)? {
            mirror.last_purged = bincode::deserialize(&v).map_err(|e| rerr(&*e))?;
        }
        drop(meta);
        drop(logs);
        drop(txn);

        let (tx, rx) = std_mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(db, rx, thread_stats, fsync))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        Ok(Self { mirror: Arc::new(RwLock::new(mirror)), writer: tx, stats })
    }

    /// The writer's counters.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    fn send(&self, op: Op) -> Result<(), StorageError<NodeId>> {
        self.writer.send(op).map_err(|_| {
            let e = io::Error::other("raft log writer thread is gone");
            io_err(ErrorSubject::Logs, ErrorVerb::Write, &e)
        })
    }

    async fn send_and_wait(
        &self,
        subject: ErrorSubject<NodeId>,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Op,
    ) -> Result<(), StorageError<NodeId>> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        let res = rx.await.unwrap_or_else(|_| Err("raft log writer thread is gone".into()));
        res.map_err(|msg| io_err(subject, ErrorVerb::Write, &io::Error::other(msg)))
    }
}

fn writer_loop(db: Arc<Database>, rx: std_mpsc::Receiver<Op>, stats: Arc<LogStats>, fsync: bool) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = fsync && batch.iter().any(Op::needs_fsync);
        let result = write_batch(&db, &batch, durable).map_err(|e| e.to_string());
        if durable {
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        for op in &batch {
            if let Op::Append { entries, .. } = op {
                stats.appends.fetch_add(1, Ordering::Relaxed);
                stats.entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        for op in batch {
            match op {
                Op::Append { done, .. } => done.log_io_completed(result.clone().map_err(io::Error::other)),
                Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                    let _ = done.send(result.clone());
                }
                Op::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(result.clone());
                    }
                }
            }
        }
    }
}

fn write_batch(db: &Database, batch: &[Op], durable: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut txn = db.begin_write()?;
    txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
    {
        let mut logs = txn.open_table(LOGS)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                Op::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        logs.insert(*index, bytes.as_slice())?;
                    }
                }
                Op::Truncate { from, .. } => {
                    logs.retain_in(*from.., |_, _| false)?;
                }
                Op::Purge { upto, log_id, .. } => {
                    meta.insert(KEY_LAST_PURGED, log_id.as_slice())?;
                    logs.retain_in(..=*upto, |_, _| false)?;
                }
                Op::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let m = self.mirror.read().expect("log mirror lock");
        Ok(m.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let m = self.mirror.read().expect("log mirror lock");
        let last = m.entries.values().next_back().map(|e| *e.get_log_id()).or(m.last_purged);
        Ok(LogState { last_purged_log_id: m.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let value = bincode::serialize(vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &*e))?;
        self.send_and_wait(ErrorSubject::Vote, |done| Op::Meta { key: KEY_VOTE, value, done: Some(done) }).await?;
        self.mirror.write().expect("log mirror lock").vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.mirror.read().expect("log mirror lock").vote)
    }

    // `save_committed`/`read_committed` keep openraft's defaults (not stored): the committed index
    // is recovered from the quorum after a restart, and storing it would cost the writer thread one
    // extra transaction per commit on every node, on the latency path of the next append.

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut m = self.mirror.write().expect("log mirror lock");
            for entry in entries {
                let index = entry.get_log_id().index;
                let bytes = bincode::serialize(&entry)
                    .map_err(|e| io_err(ErrorSubject::Log(*entry.get_log_id()), ErrorVerb::Write, &*e))?;
                encoded.push((index, bytes));
                m.entries.insert(index, entry);
            }
        }
        self.send(Op::Append { entries: encoded, done: callback })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut m = self.mirror.write().expect("log mirror lock");
            let _ = m.entries.split_off(&log_id.index);
        }
        self.send_and_wait(ErrorSubject::Logs, |done| Op::Truncate { from: log_id.index, done }).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut m = self.mirror.write().expect("log mirror lock");
            let keep = m.entries.split_off(&(log_id.index + 1));
            m.entries = keep;
            m.last_purged = Some(log_id);
        }
        let bytes = bincode::serialize(&Some(log_id)).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &*e))?;
        self.send_and_wait(ErrorSubject::Logs, |done| Op::Purge { upto: log_id.index, log_id: bytes, done }).await
    }
}
