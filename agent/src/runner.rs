//! The task runner: watches this node's assignments, drives one controller per task and reports
//! every state change back.
//!
//! ```text
//! Dispatcher::assignments(index) ──▶ runner ──spawn──▶ drive(task): prepare → start → wait
//!        (blocking query)              │  desired shutdown ─▶ shutdown → remove
//!                                      └─ statuses ──▶ reporter (batches) ──▶ Dispatcher::report
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use shoal_registry::Error;
use shoal_registry::assignments::{Assignment, Assignments};
use shoal_registry::services::{TaskState, TaskStatus, rfc3339};
use tokio::sync::{mpsc, watch};

use crate::exec::{ExecError, Executor};

/// The node's link to the managers (local on a manager, the cluster RPC on a worker).
#[async_trait]
pub trait Dispatcher: Send + Sync {
    /// This node's assignments once something changed after `index` (or `wait` passed).
    async fn assignments(&self, index: u64, wait: Duration) -> Result<Assignments, Error>;
    /// Reports task statuses.
    async fn report(&self, updates: Vec<(String, TaskStatus)>) -> Result<(), Error>;
}

fn status(state: TaskState, message: &str) -> TaskStatus {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    TaskStatus {
        state,
        timestamp: rfc3339(now),
        message: message.into(),
        err: None,
        container_id: None,
        exit_code: None,
    }
}

type Reports = mpsc::UnboundedSender<(String, TaskStatus)>;

/// Drives one task to its end (or until it is told to stop).
async fn drive(a: Assignment, executor: Arc<dyn Executor>, reports: Reports, mut desired: watch::Receiver<TaskState>) {
    let id = a.task.id.clone();
    let send = |s: TaskStatus| {
        let _ = reports.send((id.clone(), s));
    };
    let fail = |state: TaskState, e: ExecError| {
        let mut s = status(state, &e.to_string());
        s.err = Some(e.to_string());
        s
    };
    let mut c = match executor.controller(&a) {
        Ok(c) => c,
        Err(e) => return send(fail(TaskState::Rejected, e)),
    };
    send(status(TaskState::Preparing, "preparing"));
    if let Err(e) = c.prepare().await {
        return send(fail(
            if matches!(e, ExecError::Rejected(_)) { TaskState::Rejected } else { TaskState::Failed },
            e,
        ));
    }
    if *desired.borrow() > TaskState::Running {
        return send(status(TaskState::Shutdown, "shutdown before start"));
    }
    send(status(TaskState::Starting, "starting"));
    if let Err(e) = c.start().await {
        let _ = c.remove().await;
        return send(fail(
            if matches!(e, ExecError::Rejected(_)) { TaskState::Rejected } else { TaskState::Failed },
            e,
        ));
    }
    let mut running = status(TaskState::Running, "started");
    running.container_id = c.container_id();
    send(running);
    tokio::select! {
        exit = c.wait() => {
            let mut s = match exit {
                Ok(e) if e.code == 0 => status(TaskState::Complete, "finished"),
                Ok(e) => {
                    let mut s = status(TaskState::Failed, &format!("task: non-zero exit ({})", e.code));
                    s.err = Some(format!("task: non-zero exit ({})", e.code));
                    s.exit_code = Some(e.code);
                    s
                }
                Err(e) => fail(TaskState::Failed, e),
            };
            s.container_id = c.container_id();
            send(s);
        }
        _ = async { drop(desired.wait_for(|d| *d > TaskState::Running).await) } => {
            if let Err(e) = c.shutdown().await {
                tracing::warn!(task_id = %id, error = %e, "graceful stop failed; killing");
                let _ = c.terminate().await;
            }
            let mut s = status(TaskState::Shutdown, "shutdown");
            s.container_id = c.container_id();
            send(s);
        }
    }
    if let Err(e) = c.remove().await {
        tracing::warn!(task_id = %id, error = %e, "cannot remove the container");
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

/// Runs this node's tasks until the process ends.
pub async fn run(dispatcher: Arc<dyn Dispatcher>, executor: Arc<dyn Executor>) {
    let (reports, rx) = mpsc::unbounded_channel();
    tokio::spawn(reporter(dispatcher.clone(), rx));
    let mut drivers: HashMap<String, (watch::Sender<TaskState>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut index = 0;
    loop {
        let assignments = match dispatcher.assignments(index, Duration::from_secs(30)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's assignments; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        index = assignments.index;
        let mut seen = std::collections::HashSet::new();
        for a in assignments.tasks {
            let id = a.task.id.clone();
            seen.insert(id.clone());
            if let Some((tx, handle)) = drivers.get(&id) {
                if !handle.is_finished() {
                    tx.send_replace(a.task.desired);
                }
                continue;
            }
            let state = a.task.status.state;
            if state.is_terminal() {
                continue;
            }
            if a.task.desired > TaskState::Running {
                // Told to stop before this agent ever ran it.
                let _ = reports.send((id, status(TaskState::Shutdown, "shutdown")));
                continue;
            }
            if state > TaskState::Assigned {
                // Started by an earlier run of this agent: its container is not known here.
                let mut s = status(TaskState::Failed, "the agent restarted and does not know this task's container");
                s.err = Some(s.message.clone());
                let _ = reports.send((id, s));
                continue;
            }
            let (tx, desired) = watch::channel(a.task.desired);
            let handle = tokio::spawn(drive(a, executor.clone(), reports.clone(), desired));
            drivers.insert(id, (tx, handle));
        }
        // Deleted tasks: nothing to report any more.
        drivers.retain(|id, (_, handle)| {
            let keep = seen.contains(id) || !handle.is_finished();
            if !seen.contains(id) {
                handle.abort();
            }
            keep && seen.contains(id)
        });
    }
}
