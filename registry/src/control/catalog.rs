//! The catalog's checked writes and the per-node view its agents watch.
//!
//! ```text
//! agent (registrator, checks) ──/cluster/catalog-node {index, wait}──▶ any manager: its node's entries
//!                             ──/cluster/catalog-write [CatalogCommand]─▶ any manager ──▶ leader (one batch)
//! HTTP API (agent/catalog endpoints) ──Manager::catalog_write──────────────────────────┘
//! ```
//! A node writes only entries of its own node (the name its certificate's node has); catalog-API
//! registrations of other nodes come only through a manager's HTTP API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::cluster::manager::Manager;
use crate::cluster::server::{Bincode, encode};
use crate::error::Error;
use crate::pki::listener::Peer;
use shoal_model::catalog::{CatalogCommand, Check, Instance};
use shoal_model::{Command, CommandResult, NodeId};

/// What a node's agent sees of the catalog: its own instances and node-level checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCatalog {
    /// The index this view was read at (pass it back to wait for the next change).
    pub index: u64,
    /// The node's name in the catalog.
    pub node: String,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// Its node-level checks (maintenance, registered); not `serfHealth`.
    pub node_checks: Vec<Check>,
}

/// A blocking read of one node's catalog entries (`/cluster/catalog-node`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeCatalogRequest {
    /// Answer once the view changed after this index.
    pub index: u64,
    /// At most this long (ms).
    pub wait_ms: u64,
}

impl Manager {
    /// The catalog node name of cluster node `id`, if it is registered.
    pub fn node_name(&self, id: NodeId) -> Option<String> {
        self.view().read(|s| s.nodes.get(&id).map(|n| n.name.clone()))
    }

    /// `node`'s catalog entries once they changed after `index` (or `wait` passed).
    pub async fn node_catalog(&self, node: &str, index: u64, wait: Duration) -> NodeCatalog {
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(300));
        let view = self.view().clone();
        let (index, (instances, node_checks)) = self
            .view()
            .watch()
            .query(index, deadline, || {
                view.read(|s| {
                    let instances: Vec<Instance> = s.catalog.node_instances(node).cloned().collect();
                    let checks = s.catalog.node_checks.get(node);
                    let mut index = checks.map_or(0, |c| c.index);
                    index = instances.iter().map(|i| i.modify_index).fold(index, u64::max);
                    // Removals leave no record behind: the table index covers them, which wakes a
                    // node's agent for other nodes' changes too (a cheap re-read of its own entries).
                    index = index.max(s.catalog.services_index).max(s.catalog.nodes_index);
                    let node_checks = checks.map(|c| c.checks.values().cloned().collect()).unwrap_or_default();
                    (index, (instances, node_checks))
                })
            })
            .await;
        NodeCatalog { index, node: node.to_string(), instances, node_checks }
    }

    /// The catalog as discovery answers from it, once it changed after `index` (or `wait` passed):
    /// what a node's DNS server and routers keep a copy of. The wait looks at the catalog's index
    /// only; the copy (O(catalog)) is built once, when it is answered, and shared: the node's own
    /// DNS feed holds the same `Arc` as the cache the next rebuild starts from.
    pub async fn catalog_snapshot(&self, index: u64, wait: Duration) -> Arc<shoal_model::catalog::snapshot::Snapshot> {
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(300));
        let view = self.view().clone();
        self.view().watch().query(index, deadline, || view.read(|s| (s.catalog_snapshot_index(), ()))).await;
        let prev = self.catalog_snapshot.lock().expect("snapshot lock").clone();
        let next = self.view().read(|s| match &prev {
            Some(p) if p.index == s.catalog_snapshot_index() => None,
            p => Some(s.catalog_snapshot_from(p.as_deref())),
        });
        match next {
            None => prev.unwrap_or_default(),
            Some(next) => {
                let next = Arc::new(next);
                *self.catalog_snapshot.lock().expect("snapshot lock") = Some(next.clone());
                next
            }
        }
    }

    /// Writes catalog commands in one entry; each gets its own result, refusals included.
    pub async fn catalog_write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        // One command goes unwrapped, so the group-commit proposer can share its entry (and fsync)
        // with other writers' commands; a batch of its own is always proposed alone.
        if cmds.len() == 1 {
            let cmd = cmds.into_iter().next().expect("one command");
            return Ok(vec![self.write(Command::Catalog(cmd)).await?]);
        }
        let n = cmds.len();
        let cmd = Command::Batch(cmds.into_iter().map(Command::Catalog).collect());
        match self.write(cmd).await? {
            CommandResult::Batch(results) => Ok(results),
            other => Ok(vec![other; n]),
        }
    }

    /// [`Manager::catalog_write`] for a node's agent: every command must be about `node`'s own
    /// entries (no catalog-API registrations), else nothing is written.
    pub async fn node_catalog_write(&self, id: NodeId, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error> {
        let Some(name) = self.node_name(id) else {
            return Err(Error::Forbidden(format!("node {id:016x} is not registered")));
        };
        for c in &cmds {
            let about = match c {
                CatalogCommand::Register { node, .. }
                | CatalogCommand::Sync { node, .. }
                | CatalogCommand::Deregister { node, .. }
                | CatalogCommand::UpdateChecks { node, .. }
                | CatalogCommand::RegisterCheck { node, .. }
                | CatalogCommand::DeregisterCheck { node, .. }
                | CatalogCommand::Maintenance { node, .. } => Some(node),
                CatalogCommand::CatalogRegister { .. } | CatalogCommand::CatalogDeregister { .. } => None,
            };
            if about != Some(&name) {
                return Err(Error::Forbidden(format!(
                    "node {name:?} may write only its own catalog entries, not {c:?}"
                )));
            }
        }
        self.catalog_write(cmds).await
    }
}

/// The cluster-port routes of the catalog, for any node of the cluster; the cluster room puts
/// them behind its certificate check.
pub fn routes() -> axum::Router<Arc<Manager>> {
    axum::Router::new()
        .route("/cluster/catalog-snapshot", axum::routing::post(snapshot))
        .route("/cluster/catalog-node", axum::routing::post(node_view))
        .route("/cluster/catalog-write", axum::routing::post(node_write))
}

async fn node_view(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(req): Bincode<NodeCatalogRequest>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    let r: Result<NodeCatalog, Error> = match m.node_name(who.id) {
        None => Err(Error::Forbidden(format!("node {:016x} is not registered", who.id))),
        Some(name) => Ok(m.node_catalog(&name, req.index, Duration::from_millis(req.wait_ms)).await),
    };
    encode(&r)
}

/// Any node's DNS server and routers: the whole catalog as discovery sees it (blocking).
async fn snapshot(State(m): State<Arc<Manager>>, Bincode(req): Bincode<NodeCatalogRequest>) -> Response {
    encode(&*m.catalog_snapshot(req.index, Duration::from_millis(req.wait_ms)).await)
}

async fn node_write(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(cmds): Bincode<Vec<CatalogCommand>>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    encode(&m.node_catalog_write(who.id, cmds).await)
}
