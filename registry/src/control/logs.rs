//! The node's log source: its container runtime's logs, plugged in by the process that runs the
//! runtime (the registry knows nothing of Docker), and the token this node's HTTP API uses, passed
//! on when a manager asks other nodes for theirs. The HTTP side (gathering a service's lines from
//! every node) lives in the API crate.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

/// A stream of `(stream, line)`: `stream` is `stdout` or `stderr`.
pub type Lines = Pin<Box<dyn Stream<Item = (&'static str, String)> + Send>>;

/// A node's container logs (the agent's runtime implements it).
#[async_trait::async_trait]
pub trait TaskLogs: Send + Sync {
    /// The log of `task_id`'s container on this node: the last `tail` lines (all if `None`), then
    /// new lines while it runs if `follow`.
    async fn logs(&self, task_id: &str, follow: bool, tail: Option<u64>) -> Result<Lines, String>;
}

/// Where logs come from on this node (set once its runtime runs), and the token this node's API
/// uses (passed on when asking other nodes).
#[derive(Default)]
pub struct LogSource {
    runtime: std::sync::RwLock<Option<Arc<dyn TaskLogs>>>,
    token: std::sync::RwLock<Option<String>>,
}

impl LogSource {
    /// Plugs the runtime in.
    pub fn set(&self, logs: Arc<dyn TaskLogs>) {
        *self.runtime.write().expect("log source lock") = Some(logs);
    }

    /// The HTTP token of this node's API (`--http-token`), for asking other nodes.
    pub fn set_token(&self, token: Option<String>) {
        *self.token.write().expect("log source lock") = token;
    }

    /// The token to present to other nodes' APIs.
    pub fn token(&self) -> Option<String> {
        self.token.read().expect("log source lock").clone()
    }

    /// The log of `task_id`'s container on this node.
    pub async fn logs(&self, task_id: &str, follow: bool, tail: Option<u64>) -> Result<Lines, String> {
        let source = self.runtime.read().expect("log source lock").clone();
        match source {
            Some(s) => s.logs(task_id, follow, tail).await,
            None => Err("this node runs no container runtime (--runtime none)".into()),
        }
    }
}
