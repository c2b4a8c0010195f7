//! The runtime contract (swarmkit's `exec.Executor` / `exec.Controller`): one controller per task,
//! one operation at a time. Docker (`docker/`, bollard) and the fake (`fake.rs`) implement it; the
//! runner only sees this, and `step` is the one place that decides which operation comes next.
//!
//! ```text
//! assigned ─▶ preparing ─prepare()─▶ starting ─start()─▶ running ─wait()─▶ complete | failed
//!     desired shutdown at any point ──shutdown() (terminate() if that fails)──▶ shutdown
//! ```
//! Every controller operation is idempotent: an agent that restarts builds a new controller for a
//! task that is already `running` and `step` calls `wait()`, which finds the container by its labels
//! and adopts it (swarmkit's `ErrTaskStarted` path).

use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::Stream;
use shoal_model::services::{TaskState, TaskStatus, rfc3339};
use shoal_registry::rpc::wire::Assignment;

/// What went wrong, classified by what the runner should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The task cannot run here (bad image, port taken): it is rejected, not retried on this node.
    #[error("{0}")]
    Rejected(String),
    /// It ran and failed.
    #[error("{0}")]
    Failed(String),
    /// A temporary failure of the runtime itself (engine restarting): try again.
    #[error("{0}")]
    Temporary(String),
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code.
    pub code: i64,
    /// The last lines of its log (for the task message when it failed); empty if none.
    pub log_tail: String,
}

/// Drives one task's container.
#[async_trait]
pub trait Controller: Send {
    /// Makes everything ready (image present, network, the container created).
    async fn prepare(&mut self) -> Result<(), ExecError>;
    /// Starts the container (done already: `Ok`). Returns once it runs (and, when it has a health
    /// check, once it is healthy).
    async fn start(&mut self) -> Result<(), ExecError>;
    /// Resolves when the container exits (or turns unhealthy: then it is killed and this fails).
    async fn wait(&mut self) -> Result<Exit, ExecError>;
    /// Stops it gracefully (stop signal, then the grace period).
    async fn shutdown(&mut self) -> Result<(), ExecError>;
    /// Kills it.
    async fn terminate(&mut self) -> Result<(), ExecError>;
    /// Removes what is left of it.
    async fn remove(&mut self) -> Result<(), ExecError>;
    /// The container's ID, once it has one.
    fn container_id(&self) -> Option<String>;
}

/// A container this node owns, found by its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    /// The task it runs (`shoal.task.id`).
    pub task_id: String,
    /// The container's ID.
    pub container_id: String,
    /// Whether it is running.
    pub running: bool,
}

/// One line of a task's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line, without its newline.
    pub line: String,
}

/// A stream of log lines.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, ExecError>> + Send>>;

/// Makes controllers, and answers for the containers of this node as a whole.
#[async_trait]
pub trait Executor: Send + Sync {
    /// A controller for `assignment`.
    fn controller(&self, assignment: &Assignment) -> Result<Box<dyn Controller>, ExecError>;
    /// The containers this node owns (labelled with its node ID), in any state.
    async fn owned(&self) -> Result<Vec<Owned>, ExecError>;
    /// Stops and removes a container this node owns that no assignment explains.
    async fn remove_owned(&self, container_id: &str) -> Result<(), ExecError>;
    /// The log of `task_id`'s container: the last `tail` lines (all if `None`), then new lines
    /// while it runs if `follow`.
    async fn logs(&self, task_id: &str, follow: bool, tail: Option<u64>) -> Result<LogStream, ExecError>;
}

/// A status now, with `message`.
pub fn status(state: TaskState, message: &str) -> TaskStatus {
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

fn failure(state: TaskState, e: &ExecError) -> TaskStatus {
    let mut s = status(state, &e.to_string());
    s.err = Some(e.to_string());
    s
}

/// What one `step` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The task moved on: report this status (terminal ends the task).
    Status(TaskStatus),
    /// The runtime failed for a while (engine away): try the same step again later.
    Retry(String),
    /// Nothing more to do for this task.
    Done,
}

/// Advances a task by one controller operation (swarmkit's `exec.Do`): from its observed `state`
/// and `desired` state, calls at most one operation and says what the task's status is now.
pub async fn step(state: TaskState, desired: TaskState, c: &mut dyn Controller) -> Step {
    let with_container = |mut s: TaskStatus, c: &dyn Controller| {
        s.container_id = c.container_id();
        s
    };
    let rejected_or_failed = |e: &ExecError| match e {
        ExecError::Rejected(_) => TaskState::Rejected,
        _ => TaskState::Failed,
    };
    if state.is_terminal() {
        return Step::Done;
    }
    if desired > TaskState::Running {
        if state < TaskState::Starting {
            // Never started: nothing to stop, but a prepared container may be left over.
            return match c.remove().await {
                Err(ExecError::Temporary(e)) => Step::Retry(e),
                _ => Step::Status(status(TaskState::Shutdown, "shutdown before start")),
            };
        }
        if let Err(e) = c.shutdown().await {
            if let ExecError::Temporary(e) = e {
                return Step::Retry(e);
            }
            tracing::warn!(error = %e, "graceful stop failed; killing");
            if let Err(ExecError::Temporary(e)) = c.terminate().await {
                return Step::Retry(e);
            }
        }
        return Step::Status(with_container(status(TaskState::Shutdown, "shutdown"), c));
    }
    match state {
        TaskState::New | TaskState::Pending | TaskState::Assigned | TaskState::Accepted => {
            Step::Status(status(TaskState::Preparing, "preparing"))
        }
        TaskState::Preparing => match c.prepare().await {
            // Straight on to starting (swarmkit reports `ready` in between; one Raft write less).
            Ok(()) => Step::Status(with_container(status(TaskState::Starting, "starting"), c)),
            Err(ExecError::Temporary(e)) => Step::Retry(e),
            Err(e) => Step::Status(failure(rejected_or_failed(&e), &e)),
        },
        TaskState::Ready => Step::Status(with_container(status(TaskState::Starting, "starting"), c)),
        TaskState::Starting => match c.start().await {
            Ok(()) => Step::Status(with_container(status(TaskState::Running, "started"), c)),
            Err(ExecError::Temporary(e)) => Step::Retry(e),
            Err(e) => Step::Status(with_container(failure(rejected_or_failed(&e), &e), c)),
        },
        TaskState::Running => match c.wait().await {
            Ok(exit) if exit.code == 0 => Step::Status(with_container(status(TaskState::Complete, "finished"), c)),
            Ok(exit) => {
                let mut why = format!("task: non-zero exit ({})", exit.code);
                if !exit.log_tail.is_empty() {
                    why = format!("{why}; last log lines: {}", exit.log_tail);
                }
                let mut s = with_container(status(TaskState::Failed, &why), c);
                s.err = Some(why);
                s.exit_code = Some(exit.code);
                Step::Status(s)
            }
            Err(ExecError::Temporary(e)) => Step::Retry(e),
            Err(e) => Step::Status(with_container(failure(TaskState::Failed, &e), c)),
        },
        // Terminal states returned above; `Remove`/`Orphaned` are never observed states.
        _ => Step::Done,
    }
}
