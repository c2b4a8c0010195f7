//! The task runner: watches this node's assignments, drives one controller per task with `step`,
//! reports every state change back, and keeps the node's containers and assignments in agreement.
//!
//! ```text
//! Dispatcher::assignments(index) ──▶ runner ──spawn──▶ drive(task): step → step → … (exec::step)
//!        (blocking query)              │  desired changes ─▶ the driver's watch channel
//!                                      ├─ reconcile: owned containers no assignment explains ─▶ removed
//!                                      └─ statuses ──▶ reporter (batches) ──▶ Dispatcher::report
//! ```
//! A restarted agent builds drivers for the tasks it already ran: `step` resumes each from its last
//! reported state, so a running container is adopted (waited on), not restarted. An ended task's
//! container is kept as history until the managers delete the task (5 per slot, as Swarm).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use shoal_model::services::{TaskState, TaskStatus};
use shoal_registry::Error;
use shoal_registry::rpc::wire::{Assignment, Assignments};
use tokio::sync::{mpsc, watch};

use crate::exec::{ExecError, Executor, Step, status, step};

/// The node's link to the managers (local on a manager, the cluster RPC on a worker).
#[async_trait]
pub trait Dispatcher: Send + Sync {
    /// This node's assignments once something changed after `index` (or `wait` passed).
    async fn assignments(&self, index: u64, wait: Duration) -> Result<Assignments, Error>;
    /// Reports task statuses.
    async fn report(&self, updates: Vec<(String, TaskStatus)>) -> Result<(), Error>;
}

type Reports = mpsc::UnboundedSender<(String, TaskStatus)>;

/// Drives one task until it ends, one `step` at a time; a change of its desired state interrupts
/// the step under way (a pull, a start, a wait) and the next step acts on it.
async fn drive(
    a: Assignment,
    executor: Arc<dyn Executor>,
    reports: Reports,
    mut desired: watch::Receiver<TaskState>,
    drain: Duration,
) {
    let id = a.task.id.clone();
    let mut c = match executor.controller(&a) {
        Ok(c) => c,
        Err(e) => {
            let mut s = status(TaskState::Rejected, &e.to_string());
            s.err = Some(e.to_string());
            let _ = reports.send((id, s));
            return;
        }
    };
    let mut state = a.task.status.state;
    let mut backoff = Duration::from_millis(100);
    let mut drained = drain.is_zero();
    loop {
        let want = *desired.borrow_and_update();
        if want > TaskState::Running && state == TaskState::Running && !drained {
            // Its instance left the catalog when the shutdown was decided; the container keeps
            // serving for `drain` so that routers and DNS caches stop sending it new requests
            // before it stops (a stopped container's address black-holes connects until they
            // time out, which no proxy retry can hide).
            drained = true;
            tracing::debug!(task_id = %id, ?drain, "draining before the stop");
            tokio::time::sleep(drain).await;
            continue;
        }
        let outcome = tokio::select! {
            s = step(state, want, c.as_mut()) => s,
            changed = desired.changed(), if want <= TaskState::Running => {
                if changed.is_err() {
                    return; // The runner forgot this task.
                }
                continue;
            }
        };
        match outcome {
            Step::Status(s) => {
                tracing::debug!(task_id = %id, state = s.state.as_str(), message = %s.message, "task status");
                backoff = Duration::from_millis(100);
                state = s.state;
                let _ = reports.send((id.clone(), s));
            }
            Step::Retry(why) => {
                tracing::warn!(task_id = %id, error = %why, retry_in = ?backoff, "container runtime unavailable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Step::Done => break,
        }
        if state.is_terminal() {
            break;
        }
    }
    // The container stays as history, unless the task itself is to go.
    let _ = desired.wait_for(|d| *d >= TaskState::Remove).await;
    if let Err(e) = c.remove().await {
        tracing::warn!(task_id = %id, error = %e, "cannot remove the task's container");
    }
}

/// Sends statuses in batches, retrying until the managers take them.
async fn reporter(dispatcher: Arc<dyn Dispatcher>, mut rx: mpsc::UnboundedReceiver<(String, TaskStatus)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        loop {
            match dispatcher.report(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, tasks = batch.len(), "cannot report task status; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Removes the containers of this node that no task explains (their task was deleted, or they
/// were left by an agent that died); `known` are the tasks the runner knows now.
async fn reconcile(executor: &Arc<dyn Executor>, known: &HashSet<String>) -> Result<usize, ExecError> {
    let mut removed = 0;
    for o in executor.owned().await? {
        if known.contains(&o.task_id) {
            continue;
        }
        tracing::info!(task_id = %o.task_id, container_id = %o.container_id, "removing a container no task explains");
        let executor = executor.clone();
        tokio::spawn(async move {
            if let Err(e) = executor.remove_owned(&o.container_id).await {
                tracing::warn!(container_id = %o.container_id, error = %e, "cannot remove the container");
            }
        });
        removed += 1;
    }
    Ok(removed)
}

/// How often the runner compares the node's containers with its tasks when nothing else asks it to.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// Runs this node's tasks until the process ends; a running task told to stop keeps running for
/// `drain` first (see `drive`).
pub async fn run(dispatcher: Arc<dyn Dispatcher>, executor: Arc<dyn Executor>, drain: Duration) {
    // Aborting the runner (a promotion or demotion restarts it) ends its drivers and reporter too.
    let mut tasks = tokio::task::JoinSet::new();
    let (reports, rx) = mpsc::unbounded_channel();
    tasks.spawn(reporter(dispatcher.clone(), rx));
    let mut drivers: HashMap<String, watch::Sender<TaskState>> = HashMap::new();
    let mut index = 0;
    let mut last_reconcile: Option<Instant> = None;
    loop {
        let assignments = match dispatcher.assignments(index, Duration::from_secs(10)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's assignments; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        index = assignments.index;
        while tasks.try_join_next().is_some() {}
        let mut seen = HashSet::new();
        for a in assignments.tasks {
            let id = a.task.id.clone();
            seen.insert(id.clone());
            if let Some(tx) = drivers.get(&id) {
                tx.send_if_modified(|d| std::mem::replace(d, a.task.desired) != a.task.desired);
                continue;
            }
            if a.task.status.state.is_terminal() && a.task.desired < TaskState::Remove {
                continue; // History: its container (if any) stays until the task is deleted.
            }
            tracing::debug!(task_id = %id, state = a.task.status.state.as_str(), "task assigned to this node");
            let (tx, desired) = watch::channel(a.task.desired);
            tasks.spawn(drive(a, executor.clone(), reports.clone(), desired, drain));
            drivers.insert(id, tx);
        }
        // Deleted tasks: their drivers end (dropping the sender), their containers go below.
        let before = drivers.len();
        drivers.retain(|id, _| seen.contains(id));
        let deleted = drivers.len() < before;
        if deleted || last_reconcile.is_none_or(|t| t.elapsed() > RECONCILE_EVERY) {
            match reconcile(&executor, &seen).await {
                Ok(_) => last_reconcile = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot list this node's containers"),
            }
        }
    }
}
