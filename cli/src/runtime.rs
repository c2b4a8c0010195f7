//! Wires the agent's task runner to the node: a manager reads its assignments from its own state,
//! a worker over the cluster RPC. `--runtime docker` (the default) runs tasks as containers on the
//! local engine; `fake` runs them in memory (a documented test-only runtime, as Nomad's mock
//! driver); `none` runs nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use shoal_agent::{CatalogLink, Dispatcher, DockerExecutor, Executor, FakeExecutor, RuntimeNode};
use shoal_model::CommandResult;
use shoal_model::catalog::CatalogCommand;
use shoal_registry::control::catalog::NodeCatalog;
use shoal_model::services::TaskStatus;
use shoal_registry::control::logs::{Lines, LogSource, TaskLogs};
use shoal_registry::node::RunningNode;
use shoal_registry::rpc::wire::Assignments;
use shoal_registry::{Error, Manager};

/// Which container runtime runs this node's tasks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Containers on the local Docker engine (`DOCKER_HOST` or /var/run/docker.sock).
    #[default]
    Docker,
    /// Run no tasks (they stay assigned).
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

struct RemoteDispatcher(Arc<shoal_registry::node::worker::Worker>);

#[async_trait]
impl Dispatcher for RemoteDispatcher {
    async fn assignments(&self, index: u64, wait: Duration) -> Result<Assignments, Error> {
        self.0.assignments(index, wait).await
    }

    async fn report(&self, updates: Vec<(String, TaskStatus)>) -> Result<(), Error> {
        self.0.report_status(updates).await
    }
}

#[async_trait]
impl CatalogLink for LocalDispatcher {
    async fn node_catalog(&self, index: u64, wait: Duration) -> Result<NodeCatalog, Error> {
        let name = self.0.node.name.clone();
        Ok(self.0.node_catalog(&name, index, wait).await)
    }

    async fn write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error> {
        self.0.catalog_write(cmds).await
    }
}

#[async_trait]
impl CatalogLink for RemoteDispatcher {
    async fn node_catalog(&self, index: u64, wait: Duration) -> Result<NodeCatalog, Error> {
        self.0.node_catalog(index, wait).await
    }

    async fn write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error> {
        self.0.catalog_write(cmds).await
    }
}

/// The runtime for this node, or `None` for `--runtime none`. Docker must answer now: a node that
/// is meant to run containers and cannot is a mistake to report at start, not later.
pub async fn executor(
    kind: RuntimeKind,
    node: &RunningNode,
    bind_ip: IpAddr,
) -> anyhow::Result<Option<Arc<dyn Executor>>> {
    Ok(match kind {
        RuntimeKind::None => None,
        RuntimeKind::Fake => Some(Arc::new(FakeExecutor::default())),
        RuntimeKind::Docker => {
            let (id, name) = match node {
                RunningNode::Manager(m) => (m.id, m.node.name.clone()),
                RunningNode::Worker(w) => (w.id, w.identity.name.clone()),
            };
            let identity = RuntimeNode {
                id: format!("{id:016x}"),
                name,
                publish_ip: (!bind_ip.is_unspecified()).then_some(bind_ip),
            };
            let docker = DockerExecutor::connect(identity).await.map_err(|e| {
                anyhow::anyhow!(
                    "--runtime docker: {e}; start Docker (or set DOCKER_HOST), or run this node with --runtime none"
                )
            })?;
            Some(Arc::new(docker))
        }
    })
}

/// The runtime's container logs, as the registry's log routes read them.
struct RuntimeLogs(Arc<dyn Executor>);

#[async_trait]
impl TaskLogs for RuntimeLogs {
    async fn logs(&self, task_id: &str, follow: bool, tail: Option<u64>) -> Result<Lines, String> {
        let lines = self.0.logs(task_id, follow, tail).await.map_err(|e| e.to_string())?;
        Ok(Box::pin(lines.filter_map(|l| async move { l.ok().map(|l| (l.stream, l.line)) })))
    }
}

/// Starts the task runner for `node` with `executor`, and serves its containers' logs.
pub fn start(
    executor: &Option<Arc<dyn Executor>>,
    node: &RunningNode,
    logs: &LogSource,
) -> Option<tokio::task::JoinHandle<()>> {
    let executor = executor.clone()?;
    logs.set(Arc::new(RuntimeLogs(executor.clone())));
    let dispatcher: Arc<dyn Dispatcher> = match node {
        RunningNode::Manager(m) => Arc::new(LocalDispatcher(m.clone())),
        RunningNode::Worker(w) => Arc::new(RemoteDispatcher(w.clone())),
    };
    Some(tokio::spawn(shoal_agent::run(dispatcher, executor)))
}
