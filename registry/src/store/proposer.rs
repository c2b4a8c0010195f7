//! Group commit in front of Raft.
//!
//! openraft 0.9 appends each client write to the log and waits for its fsync before it takes the next
//! one (`RaftCore::append_to_log` is blocking), so without help every write costs one fsync on the
//! leader. The proposer collects the writes that arrive while earlier batches are in flight and
//! proposes them as one log entry ([`Command::Batch`]): N concurrent writes share one fsync on every
//! node and one replication round. A lone write is proposed at once, so a single client pays no delay.
//!
//! Ordering: a batch applies its commands in arrival order, all at the batch's log index. Writes
//! from one client are never reordered, because a client waits for each answer before its next write.

use std::sync::Arc;

use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::Error;
use crate::store::TypeConfig;
use shoal_model::{Command, CommandResult};

/// Most commands in one batch.
const MAX_BATCH: usize = 1024;
/// Most value bytes in one batch (a single larger command still goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches in flight at once: one being made durable while the next one fills.
const MAX_IN_FLIGHT: usize = 2;

struct Pending {
    cmd: Command,
    done: oneshot::Sender<Result<CommandResult, Error>>,
}

/// Submits commands to Raft in batches. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft<TypeConfig>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Proposes `cmd` and waits until it is committed and applied. Fails with the not-leader marker
    /// when this node does not lead (nothing was applied then).
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, Error> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Pending { cmd, done }).map_err(|_| Error::Unavailable("raft is shutting down".into()))?;
        rx.await.unwrap_or_else(|_| Err(Error::Unavailable("raft is shutting down".into())))
    }
}

fn weight(cmd: &Command) -> usize {
    match cmd {
        Command::KvSet { key, value, .. } => key.len() + value.len(),
        Command::Batch(cmds) => cmds.iter().map(weight).sum(),
        Command::Service(shoal_model::services::ServiceCommand::Create { spec, .. })
        | Command::Service(shoal_model::services::ServiceCommand::Update { spec, .. }) => spec.len(),
        _ => 64,
    }
}

async fn run(raft: Raft<TypeConfig>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // While every slot is busy, more writes queue up and join this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut bytes = weight(&first.cmd);
        // A command that is already a batch goes alone: batches do not nest.
        let alone = matches!(first.cmd, Command::Batch(_));
        let mut batch = vec![first];
        while !alone && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) if matches!(p.cmd, Command::Batch(_)) || bytes + weight(&p.cmd) > MAX_BATCH_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += weight(&p.cmd);
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            submit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn submit(raft: &Raft<TypeConfig>, mut batch: Vec<Pending>) {
    let single = batch.len() == 1;
    let cmd = if single {
        batch[0].cmd.clone()
    } else {
        Command::Batch(batch.iter_mut().map(|p| std::mem::replace(&mut p.cmd, Command::Batch(Vec::new()))).collect())
    };
    let result = match raft.client_write(cmd).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(Error::NotLeader),
        Err(e) => Err(Error::Internal(format!("raft write failed: {e}"))),
    };
    match result {
        Ok(CommandResult::Batch(results)) if !single && results.len() == batch.len() => {
            for (p, r) in batch.into_iter().zip(results) {
                let _ = p.done.send(Ok(r));
            }
        }
        Ok(r) if single => {
            let _ = batch.pop().expect("one").done.send(Ok(r));
        }
        Ok(other) => {
            let e = Error::Internal(format!("unexpected result for a batch of {}: {other:?}", batch.len()));
            for p in batch {
                let _ = p.done.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.done.send(Err(e.clone()));
            }
        }
    }
}
