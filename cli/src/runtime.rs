//! Wires the agent (task runner, health checks, registrator) to the node: a manager reads its
//! assignments and catalog entries from its own state, a worker over the cluster RPC. `--runtime docker` (the default) runs tasks as containers on the
//! local engine; `fake` runs them in memory (a documented test-only runtime, as Nomad's mock
//! driver); `none` runs nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use shoal_agent::{CatalogLink, Dispatcher, DockerExecutor, Executor, FakeExecutor, NodeFacts, RuntimeNode};
use shoal_model::CommandResult;
use shoal_model::catalog::CatalogCommand;
use shoal_model::services::TaskStatus;
use shoal_registry::control::catalog::NodeCatalog;
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

/// This node's container runtime: what runs its tasks (`None` for `--runtime none`) and, with
/// Docker, the engine the registrator watches and exec checks run in.
pub struct Runtime {
    executor: Option<Arc<dyn Executor>>,
    docker: Option<DockerExecutor>,
    /// Whether containers Shoal did not start are registered (`--no-register-containers` unsets it).
    register_others: bool,
    /// `--drain-delay`: a shut-down task's container runs this long after leaving the catalog.
    drain: std::time::Duration,
}

/// The runtime for this node; with Docker, its task containers resolve through `resolver` when
/// there is one. Docker must answer now: a node that is meant to run containers and
/// cannot is a mistake to report at start, not later.
pub async fn executor(
    kind: RuntimeKind,
    node: &RunningNode,
    bind_ip: IpAddr,
    register_others: bool,
    resolver: Option<Arc<dyn shoal_agent::docker::resolver::ContainerResolver>>,
    drain: std::time::Duration,
) -> anyhow::Result<Runtime> {
    Ok(match kind {
        RuntimeKind::None => Runtime { executor: None, docker: None, register_others, drain },
        RuntimeKind::Fake => {
            Runtime { executor: Some(Arc::new(FakeExecutor::default())), docker: None, register_others, drain }
        }
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
            let docker = match resolver {
                Some(r) => docker.with_resolver(r),
                None => docker,
            };
            Runtime { executor: Some(Arc::new(docker.clone())), docker: Some(docker), register_others, drain }
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

/// Starts this node's agent: the task runner (with a runtime), the health-check runner (always:
/// HTTP, TCP and TTL checks need no runtime), with Docker the registrator, and the feed of the DNS
/// server's copy of the catalog; and serves the containers' logs. Aborting the handle stops them all
/// (a role switch restarts them on the new link).
pub fn start(
    runtime: &Runtime,
    node: &RunningNode,
    logs: &LogSource,
    dns: &Option<shoal_dns::SnapshotHandle>,
) -> Option<tokio::task::JoinHandle<()>> {
    let (dispatcher, link): (Arc<dyn Dispatcher>, Arc<dyn CatalogLink>) = match node {
        RunningNode::Manager(m) => (Arc::new(LocalDispatcher(m.clone())), Arc::new(LocalDispatcher(m.clone()))),
        RunningNode::Worker(w) => (Arc::new(RemoteDispatcher(w.clone())), Arc::new(RemoteDispatcher(w.clone()))),
    };
    let (id, name, cluster_addr) = match node {
        RunningNode::Manager(m) => (m.id, m.node.name.clone(), m.node.cluster_addr.clone()),
        RunningNode::Worker(w) => (w.id, w.identity.name.clone(), w.identity.cluster_addr.clone()),
    };
    let tasks = runtime.executor.clone().map(|executor| {
        logs.set(Arc::new(RuntimeLogs(executor.clone())));
        shoal_agent::run(dispatcher, executor, runtime.drain)
    });
    let exec = runtime.docker.clone().map(|d| Arc::new(d) as Arc<dyn shoal_agent::ContainerExec>);
    let checks = shoal_agent::run_checks(link.clone(), exec);
    let registrator = runtime.docker.clone().map(|d| {
        let facts = NodeFacts {
            id: format!("{id:016x}"),
            name,
            address: shoal_model::catalog::read::host_of(&cluster_addr),
            register_others: runtime.register_others,
        };
        shoal_agent::registrator::run(link, Arc::new(d), facts)
    });
    let dns = dns.clone().map(|h| crate::dns::feed(node.clone(), h));
    Some(tokio::spawn(async move {
        let dns = async move {
            if let Some(d) = dns {
                d.await
            }
        };
        let tasks = async move {
            if let Some(t) = tasks {
                t.await
            }
        };
        let registrator = async move {
            if let Some(r) = registrator {
                r.await
            }
        };
        tokio::join!(tasks, checks, registrator, dns);
    }))
}
