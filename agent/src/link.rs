//! The agent's link to the catalog: its node's entries (a blocking read) and writes about them.
//! On a manager it is the manager itself; on a worker, the cluster RPC to the managers (`cli`
//! wires both). [`MemoryCatalog`] is an in-memory one over the model's pure apply, for tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_model::catalog::CatalogCommand;
use shoal_model::{Command, CommandResult, State};
use shoal_registry::Error;
use shoal_registry::control::catalog::NodeCatalog;
use tokio::sync::watch;

/// Where the registrator and the check runner read and write this node's catalog entries.
#[async_trait]
pub trait CatalogLink: Send + Sync {
    /// This node's entries once they changed after `index` (or `wait` passed).
    async fn node_catalog(&self, index: u64, wait: Duration) -> Result<NodeCatalog, Error>;
    /// Writes commands about this node in one entry; one result each.
    async fn write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error>;
}

/// An in-memory catalog for tests: the model's `State` behind a lock, with the same blocking read.
#[derive(Clone)]
pub struct MemoryCatalog {
    state: Arc<Mutex<State>>,
    node: String,
    applied: Arc<watch::Sender<u64>>,
    /// Every batch written, in order (tests assert on what was written, not only on the result).
    pub writes: Arc<Mutex<Vec<Vec<CatalogCommand>>>>,
}

impl MemoryCatalog {
    /// A catalog over `state`, seen as node `node` (which must be a node of `state`).
    pub fn new(state: State, node: &str) -> Self {
        let index = state.index;
        MemoryCatalog {
            state: Arc::new(Mutex::new(state)),
            node: node.to_string(),
            applied: Arc::new(watch::channel(index).0),
            writes: Arc::default(),
        }
    }

    /// Applies `cmd` as if the cluster had (e.g. a node going down, a task shutting down).
    pub fn apply(&self, cmd: &Command) -> CommandResult {
        let mut s = self.state.lock().expect("state lock");
        let index = s.index + 1;
        let r = s.apply(index, cmd);
        self.applied.send_replace(index);
        r
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().expect("state lock"))
    }

    fn view(&self) -> NodeCatalog {
        let s = self.state.lock().expect("state lock");
        let node = self.node.as_str();
        NodeCatalog {
            index: s.index,
            node: self.node.clone(),
            instances: s.catalog.node_instances(node).cloned().collect(),
            node_checks: s
                .catalog
                .node_checks
                .get(node)
                .map(|c| c.checks.values().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

#[async_trait]
impl CatalogLink for MemoryCatalog {
    async fn node_catalog(&self, index: u64, wait: Duration) -> Result<NodeCatalog, Error> {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > index)).await;
        Ok(self.view())
    }

    async fn write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error> {
        self.writes.lock().expect("writes lock").push(cmds.clone());
        let r = self.apply(&Command::Batch(cmds.into_iter().map(Command::Catalog).collect()));
        match r {
            CommandResult::Batch(v) => Ok(v),
            other => Ok(vec![other]),
        }
    }
}
