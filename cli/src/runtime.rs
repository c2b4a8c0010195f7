//! Wires the agent's task runner to the node: a manager reads its assignments from its own state,
//! a worker over the cluster RPC. `--runtime fake` runs tasks in memory (a documented test-only
//! runtime, as Nomad's mock driver); the Docker runtime comes with the agent issue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_agent::{Dispatcher, Executor, FakeExecutor};
use shoal_registry::assignments::Assignments;
use shoal_registry::node::RunningNode;
use shoal_registry::services::TaskStatus;
use shoal_registry::{Error, Manager};

/// Which container runtime runs this node's tasks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Run no tasks (they stay assigned).
    #[default]
    None,
    /// Test-only: containers "run" in memory; images named `fail…` exit with 1.
    Fake,
}

struct LocalDispatcher(Arc<Manager>);

#[async_trait]
impl Dispatcher for LocalDispatcher {
    async fn assignments(&self, index: u64, wait: Duration) -> Result<Assignments, Error> {
        Ok(self.0.assignments_for(self.0.id, index, wait).await)
    }

    async fn report(&self, updates: Vec<(String, TaskStatus)>) -> Result<(), Error> {
        self.0.report_status(self.0.id, updates).await
    }
}

struct RemoteDispatcher(Arc<shoal_registry::worker::Worker>);

#[async_trait]
impl Dispatcher for RemoteDispatcher {
    async fn assignments(&self, index: u64, wait: Duration) -> Result<Assignments, Error> {
        self.0.assignments(index, wait).await
    }

    async fn report(&self, updates: Vec<(String, TaskStatus)>) -> Result<(), Error> {
        self.0.report_status(updates).await
    }
}

/// Starts the task runner for `node`, if a runtime was chosen.
pub fn start(kind: RuntimeKind, node: &RunningNode) -> Option<tokio::task::JoinHandle<()>> {
    let executor: Arc<dyn Executor> = match kind {
        RuntimeKind::None => return None,
        RuntimeKind::Fake => Arc::new(FakeExecutor::default()),
    };
    let dispatcher: Arc<dyn Dispatcher> = match node {
        RunningNode::Manager(m) => Arc::new(LocalDispatcher(m.clone())),
        RunningNode::Worker(w) => Arc::new(RemoteDispatcher(w.clone())),
    };
    Some(tokio::spawn(shoal_agent::run(dispatcher, executor)))
}
