//! The runtime contract (swarmkit's `exec.Executor` / `exec.Controller`): one controller per task,
//! one operation at a time. Docker (bollard) and the fake implement it; the runner only sees this.

use async_trait::async_trait;
use shoal_registry::assignments::Assignment;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code.
    pub code: i64,
}

/// Drives one task's container.
#[async_trait]
pub trait Controller: Send {
    /// Makes everything ready (image present, network, volumes).
    async fn prepare(&mut self) -> Result<(), ExecError>;
    /// Starts the container.
    async fn start(&mut self) -> Result<(), ExecError>;
    /// Resolves when the container exits.
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

/// Makes controllers.
pub trait Executor: Send + Sync {
    /// A controller for `assignment`.
    fn controller(&self, assignment: &Assignment) -> Result<Box<dyn Controller>, ExecError>;
}
