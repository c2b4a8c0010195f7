//! Shared ReadIndex: concurrent linearizable reads share one quorum confirmation.
//!
//! A read may use a leadership confirmation only if that confirmation *started after the read
//! arrived*; otherwise a write acknowledged in between could be missed. So reads that arrive while a
//! confirmation is in flight wait for the next one, which starts as soon as the current one ends and
//! serves all of them — the read-side twin of group commit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use crate::error::Error;
use crate::store::TypeConfig;

type Waiter = oneshot::Sender<Result<u64, Error>>;

#[derive(Default)]
struct Queue {
    running: bool,
    waiters: Vec<Waiter>,
}

/// Coalesces `ensure_linearizable` calls. Cheap to clone.
#[derive(Clone)]
pub struct ReadBarrier {
    raft: Raft<TypeConfig>,
    queue: Arc<Mutex<Queue>>,
    timeout: Duration,
}

impl ReadBarrier {
    /// A barrier over `raft`; one confirmation gives up after `timeout`.
    pub fn new(raft: Raft<TypeConfig>, timeout: Duration) -> Self {
        Self { raft, queue: Arc::default(), timeout }
    }

    /// The read index: once this node has applied it, a local read is linearizable.
    pub async fn read_index(&self) -> Result<u64, Error> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().expect("read queue lock");
            q.waiters.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drive().await });
        }
        rx.await.unwrap_or_else(|_| Err(Error::Unavailable("raft is shutting down".into())))
    }

    async fn drive(&self) {
        loop {
            let waiters = {
                let mut q = self.queue.lock().expect("read queue lock");
                if q.waiters.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.waiters)
            };
            let result = match tokio::time::timeout(self.timeout, self.raft.ensure_linearizable()).await {
                Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => Err(Error::NotLeader),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Err(Error::NoLeader),
                Ok(Err(e)) => Err(Error::Internal(format!("read barrier failed: {e}"))),
                Err(_) => Err(Error::NoLeader),
            };
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
    }
}
