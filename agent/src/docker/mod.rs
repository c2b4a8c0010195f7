//! The Docker runtime: the only module that talks to the engine (bollard). A task becomes one
//! container, named `SERVICE.SLOT.TASK` as Swarm names them, labelled with the node, service and
//! task so that each node finds its own containers again (several nodes may share one engine).
//!
//! ```text
//! prepare: image present? (else pull; else "image not found locally: NAME")
//!          ─▶ network shoal-SERVICE-ID (bridge, per host) ─▶ create container (labels, env, ports…)
//! start:   start ─▶ healthy? (when it has a health check)
//! wait:    /containers/ID/wait (the health is watched too: unhealthy ⇒ killed, failed)
//! shutdown: stop (the spec's stop signal, then its grace period)  ·  remove: rm -f
//! ```
//! Docker's own restart policy stays off: restarts are the orchestrator's decision. Host-mode ports
//! are published on the node's own address when it has one, so nodes sharing an engine (on
//! 127.0.0.2, .3 …) do not collide.
//!
//! `plan.rs` turns an assignment into a container (pure); `executor.rs` is the [`Executor`]
//! (this node's containers, their removal and logs); `controller.rs` drives one task's container;
//! `resolver.rs` is how the containers get the node's DNS server as their resolver.
//!
//! [`Executor`]: crate::exec::Executor

mod controller;
mod events;
mod exec;
mod executor;
mod plan;
pub mod resolver;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;

use crate::exec::ExecError;

/// Labels on every container Shoal starts.
pub mod labels {
    /// The node that runs it (16 hex digits).
    pub const NODE_ID: &str = "shoal.node.id";
    /// Its service's ID.
    pub const SERVICE_ID: &str = "shoal.service.id";
    /// Its service's name.
    pub const SERVICE_NAME: &str = "shoal.service.name";
    /// Its task's ID.
    pub const TASK_ID: &str = "shoal.task.id";
    /// Its task's slot (0 for a global service's task).
    pub const TASK_SLOT: &str = "shoal.task.slot";
}

/// Who this node is, as its containers are labelled and published.
#[derive(Debug, Clone)]
pub struct RuntimeNode {
    /// The node ID, 16 hex digits.
    pub id: String,
    /// The node's name.
    pub name: String,
    /// Where host-mode ports are published: the node's own address, or `None` for all addresses.
    pub publish_ip: Option<IpAddr>,
}

struct Inner {
    /// For requests that answer at once (a minute at most).
    quick: Docker,
    /// For requests that last as long as a container (wait, stop, pull, followed logs).
    long: Docker,
    node: RuntimeNode,
    /// This node's networks known to exist, with the address of the resolver their containers
    /// use (`None`: Docker's default). Containers are created under the read lock; a network is
    /// made, or removed with the last container of its service, under the write lock.
    networks: tokio::sync::RwLock<std::collections::HashMap<String, Option<IpAddr>>>,
    /// Serves DNS to the containers (see `resolver.rs`); `None`: they get Docker's default.
    resolver: Option<Arc<dyn resolver::ContainerResolver>>,
}

/// Runs tasks as containers on the local Docker engine.
#[derive(Clone)]
pub struct DockerExecutor(Arc<Inner>);

fn temporary(e: DockerError) -> ExecError {
    ExecError::Temporary(format!("docker engine: {e}"))
}

fn not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// The engine's message for an answer with an error status, `None` for a transport failure.
fn server_message(e: &DockerError) -> Option<(u16, &str)> {
    match e {
        DockerError::DockerResponseServerError { status_code, message } => Some((*status_code, message)),
        _ => None,
    }
}

impl DockerExecutor {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and checks that it answers.
    pub async fn connect(node: RuntimeNode) -> Result<Self, String> {
        let connect = |timeout: Duration| -> Result<Docker, String> {
            Docker::connect_with_local_defaults()
                .map(|d| d.with_timeout(timeout))
                .map_err(|e| format!("cannot reach the Docker engine: {e}"))
        };
        let quick = connect(Duration::from_secs(60))?;
        let quick = quick.negotiate_version().await.map_err(|e| format!("the Docker engine does not answer: {e}"))?;
        let long = connect(Duration::from_secs(365 * 24 * 3600))?
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker engine does not answer: {e}"))?;
        Ok(Self(Arc::new(Inner { quick, long, node, networks: Default::default(), resolver: None })))
    }

    /// The same executor, whose task containers resolve names through `resolver` (call before
    /// the executor is shared).
    pub fn with_resolver(self, resolver: Arc<dyn resolver::ContainerResolver>) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.resolver = Some(resolver);
                Self(Arc::new(inner))
            }
            Err(shared) => {
                tracing::warn!("the Docker executor is already shared; its containers keep Docker's DNS");
                Self(shared)
            }
        }
    }
}

/// The local engine's version (for the node table, `docker node ls`), or `None` when no engine
/// answers within a second.
pub async fn engine_version() -> Option<String> {
    let docker = Docker::connect_with_local_defaults().ok()?;
    let asked = tokio::time::timeout(Duration::from_secs(1), docker.version()).await;
    asked.ok()?.ok()?.version
}
