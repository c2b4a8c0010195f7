//! The durable Raft log: redb on disk, a mirror in memory, and group commit.
//!
//! Every write (appends, truncations, purges, the vote) goes to one writer thread in order. The thread
//! takes everything queued since its last commit and writes it in **one** redb transaction, so
//! concurrent client writes share one fsync. An append is acknowledged to openraft (its
//! `LogFlushed` callback) only after that transaction has committed durably.
//!
//! Reads are served from the in-memory mirror, which is updated before the write is queued: openraft
//! may read an entry it has just appended (to replicate it) before it is on disk, and the mirror keeps
//! that consistent. The mirror holds entries **encoded** (the same bincode bytes the writer stores,
//! shared with it; a decoded entry of one catalog registration took 2,351 B of heap), and only the
//! newest of them: once an entry is on disk and the mirror holds more than [`MIRROR_BYTES`] of
//! newer ones (and at least [`MIRROR_MIN_ENTRIES`] newer entries), it is dropped from memory and read back from redb if openraft ever asks for it (a
//! follower far behind; applying and replicating read the newest entries). Without that bound the
//! log's memory grew with every write until the next snapshot, up to `--snapshot-threshold` +
//! `--keep-logs` entries: 780 B per registration, more than the catalog itself.
//!
//! Which entries are on disk is told by sequence numbers: every append takes the next one, the
//! writer reports the highest whose transaction committed, and an entry may leave memory only if
//! the append that wrote it has committed. A later truncation or re-append of the same index gives
//! it a newer sequence number, so memory never drops a newer entry than the one on disk.

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

/// Encoded entries by index, as read from the mirror or the disk.
type Encoded = Vec<(u64, Arc<[u8]>)>;

/// Bytes of durable entries the mirror keeps in memory (newest first) before it drops older ones.
/// 256 KiB: a node's whole memory is ~1 KiB per catalog instance, and 1 MiB here was ~100 B of it
/// over a 10,000-instance load (bench/RESULTS.md, "Catalog at scale").
const MIRROR_BYTES: usize = 256 << 10;
/// Entries the mirror always keeps, however large. A registration load batches ~16 registrations
/// (~13 KB encoded) per entry, so 64 of them were ~0.8 MB and overrode the byte bound; 16 keep the
/// newest entries, the ones applying and replicating to followers that keep up read, in memory.
const MIRROR_MIN_ENTRIES: usize = 16;

enum Op {
    Append {
        entries: Encoded,
        /// The append's sequence number (see the module docs).
        seq: u64,
        done: LogFlushed<TypeConfig>,
    },
    /// Delete `index >= from`.
    Truncate { from: u64, done: oneshot::Sender<Result<(), String>> },
    /// Delete `index <= upto`, remember the purged log id.
    Purge { upto: u64, log_id: Vec<u8>, done: oneshot::Sender<Result<(), String>> },
    /// Write a META record; `done` is `None` for records that may ride on the next durable commit.
    Meta { key: &'static str, value: Vec<u8>, done: Option<oneshot::Sender<Result<(), String>>> },
}

impl Op {
    fn needs_fsync(&self) -> bool {
        !matches!(self, Op::Meta { done: None, .. })
    }
}

/// An entry in memory.
struct Held {
    log_id: LogId<NodeId>,
    /// Its bincode bytes, as stored.
    bytes: Arc<[u8]>,
    /// The sequence number of the append that wrote it.
    seq: u64,
}

#[derive(Default)]
struct Mirror {
    /// Bytes of durable entries kept in memory, and entries always kept ([`MIRROR_BYTES`] and
    /// [`MIRROR_MIN_ENTRIES`]; tests set 0 to read everything durable from disk).
    max_bytes: usize,
    min_entries: usize,
    /// The newest entries, by index.
    entries: BTreeMap<u64, Held>,
    /// Their bytes.
    bytes: usize,
    /// Entries up to this index that exist are on disk only (`None`: none; 0 is an index).
    evicted_upto: Option<u64>,
    /// The last entry's log id, wherever it is (`None`: no entry since the last purge).
    last: Option<LogId<NodeId>>,
    /// The next append's sequence number; the highest whose write has committed.
    next_seq: u64,
    committed_seq: u64,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

impl Mirror {
    /// Drops the oldest durable entries while more than [`MIRROR_BYTES`] are held.
    fn evict(&mut self) {
        while self.bytes > self.max_bytes && self.entries.len() > self.min_entries {
            let Some(first) = self.entries.first_entry() else { break };
            if first.get().seq > self.committed_seq {
                break;
            }
            let (index, held) = first.remove_entry();
            self.bytes -= held.bytes.len();
            self.evicted_upto = Some(index);
        }
    }
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
    db: Arc<Database>,
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
        Self::open_with_limits(db, fsync, MIRROR_BYTES, MIRROR_MIN_ENTRIES)
    }

    /// Like [`LogStore::open_with`], keeping at most `max_bytes` of durable entries (at least
    /// `min_entries` of them) in memory. Tests pass 0 and 0 so that every read of a durable entry
    /// goes to disk.
    pub fn open_with_limits(
        db: Arc<Database>,
        fsync: bool,
        max_bytes: usize,
        min_entries: usize,
    ) -> Result<Self, StorageError<NodeId>> {
        let mut mirror = Mirror { max_bytes, min_entries, ..Mirror::default() };
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
            let bytes: Arc<[u8]> = Arc::from(v.value());
            mirror.bytes += bytes.len();
            mirror.last = Some(*entry.get_log_id());
            mirror.entries.insert(k.value(), Held { log_id: *entry.get_log_id(), bytes, seq: 0 });
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
        mirror.last = mirror.last.or(mirror.last_purged);
        mirror.next_seq = 1;
        mirror.evict(); // everything read is on disk (sequence 0)

        let (tx, rx) = std_mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let thread_stats = stats.clone();
        let mirror = Arc::new(RwLock::new(mirror));
        let (thread_db, thread_mirror) = (db.clone(), mirror.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(thread_db, rx, thread_mirror, thread_stats, fsync))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        Ok(Self { db, mirror, writer: tx, stats })
    }

    /// Entries of `range` up to `upto` from disk (they have left the mirror), encoded.
    fn read_from_disk<RB: RangeBounds<u64>>(&self, range: &RB, upto: u64) -> Result<Encoded, StorageError<NodeId>> {
        let rerr = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, AnyError::error(e.to_string())).into()
        };
        let txn = self.db.begin_read().map_err(|e| rerr(&e))?;
        let logs = txn.open_table(LOGS).map_err(|e| rerr(&e))?;
        let mut out = Vec::new();
        for row in logs.range((range.start_bound().cloned(), std::ops::Bound::Included(upto))).map_err(|e| rerr(&e))? {
            let (k, v) = row.map_err(|e| rerr(&e))?;
            if range.contains(&k.value()) {
                out.push((k.value(), Arc::from(v.value())));
            }
        }
        Ok(out)
    }

    /// The log id of entry `index`, which is on disk only.
    fn read_log_id(&self, index: u64) -> Result<LogId<NodeId>, StorageError<NodeId>> {
        let found = self.read_from_disk(&(index..=index), index)?;
        let Some((_, bytes)) = found.first() else {
            let e = io::Error::other(format!("log entry {index} is neither in memory nor on disk"));
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Read, &e));
        };
        let entry: Entry<TypeConfig> =
            bincode::deserialize(bytes).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &*e))?;
        Ok(*entry.get_log_id())
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

/// Whether `range` holds an index at or below `upto`.
fn range_starts_at_or_below<RB: RangeBounds<u64>>(range: &RB, upto: u64) -> bool {
    use std::ops::Bound;
    match range.start_bound() {
        Bound::Included(s) => *s <= upto,
        Bound::Excluded(s) => *s < upto,
        Bound::Unbounded => true,
    }
}

fn writer_loop(
    db: Arc<Database>,
    rx: std_mpsc::Receiver<Op>,
    mirror: Arc<RwLock<Mirror>>,
    stats: Arc<LogStats>,
    fsync: bool,
) {
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
        } else if let Some(seq) =
            batch.iter().filter_map(|op| if let Op::Append { seq, .. } = op { Some(*seq) } else { None }).max()
        {
            // On disk now: these entries may leave memory.
            let mut m = mirror.write().expect("log mirror lock");
            m.committed_seq = m.committed_seq.max(seq);
            m.evict();
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
                        logs.insert(*index, &bytes[..])?;
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
        // Copy the bytes out under the lock, decode after it, so appends never wait on a decode.
        let (evicted_upto, mut raw): (Option<u64>, Encoded) = {
            let m = self.mirror.read().expect("log mirror lock");
            (m.evicted_upto, m.entries.range(range.clone()).map(|(i, h)| (*i, h.bytes.clone())).collect())
        };
        if let Some(evicted_upto) = evicted_upto
            && range_starts_at_or_below(&range, evicted_upto)
        {
            let mut older = self.read_from_disk(&range, evicted_upto)?;
            older.append(&mut raw);
            raw = older;
        }
        raw.into_iter()
            .map(|(index, bytes)| {
                bincode::deserialize(&bytes).map_err(|e| {
                    let e = io::Error::other(format!("log entry {index} does not decode: {e}"));
                    io_err(ErrorSubject::Logs, ErrorVerb::Read, &e)
                })
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let m = self.mirror.read().expect("log mirror lock");
        let last = m.last.or(m.last_purged);
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
        let seq;
        {
            let mut m = self.mirror.write().expect("log mirror lock");
            seq = m.next_seq;
            m.next_seq += 1;
            for entry in entries {
                let index = entry.get_log_id().index;
                let bytes: Arc<[u8]> = bincode::serialize(&entry)
                    .map_err(|e| io_err(ErrorSubject::Log(*entry.get_log_id()), ErrorVerb::Write, &*e))?
                    .into();
                encoded.push((index, bytes.clone()));
                m.bytes += bytes.len();
                m.last = Some(*entry.get_log_id());
                if let Some(old) = m.entries.insert(index, Held { log_id: *entry.get_log_id(), bytes, seq }) {
                    m.bytes -= old.bytes.len();
                }
            }
        }
        self.send(Op::Append { entries: encoded, seq, done: callback })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut m = self.mirror.write().expect("log mirror lock");
            let gone = m.entries.split_off(&log_id.index);
            m.bytes -= gone.values().map(|h| h.bytes.len()).sum::<usize>();
            // The new last entry is the one before `log_id`: in memory, on disk, or purged.
            let before = log_id.index.checked_sub(1);
            m.last = match before {
                Some(i) if m.entries.contains_key(&i) => Some(m.entries[&i].log_id),
                Some(i) if m.evicted_upto.is_some_and(|e| i <= e) && m.last_purged.is_none_or(|p| i > p.index) => {
                    Some(self.read_log_id(i)?)
                }
                _ => m.last_purged,
            };
            m.evicted_upto = match before {
                None => None,
                Some(b) => m.evicted_upto.map(|e| e.min(b)),
            };
        }
        self.send_and_wait(ErrorSubject::Logs, |done| Op::Truncate { from: log_id.index, done }).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut m = self.mirror.write().expect("log mirror lock");
            let keep = m.entries.split_off(&(log_id.index + 1));
            let gone = std::mem::replace(&mut m.entries, keep);
            m.bytes -= gone.values().map(|h| h.bytes.len()).sum::<usize>();
            m.last_purged = Some(log_id);
            if m.last.is_none_or(|l| l.index <= log_id.index) {
                m.last = Some(log_id);
            }
        }
        let bytes = bincode::serialize(&Some(log_id)).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &*e))?;
        self.send_and_wait(ErrorSubject::Logs, |done| Op::Purge { upto: log_id.index, log_id: bytes, done }).await
    }
}
