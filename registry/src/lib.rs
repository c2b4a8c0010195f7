//! Shoal's registry: the source of truth of the cluster.
//!
//! A Raft-replicated ([openraft]) state machine with a durable log on disk ([redb]), one watch
//! mechanism on its applied index, and the HTTP API (Shoal's own endpoints and a Consul-compatible
//! subset). See `README.md` in this crate for the flow and the design choices.

// openraft's storage traits fix `StorageError` (224 bytes) as the error type; boxing it at our
// boundaries would only add conversions.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod assignments;
pub mod demotion;
pub mod error;
pub mod files;
pub mod gossip_params;
pub mod kv;
pub mod listener;
pub mod liveness;
pub mod log_store;
pub mod manager;
pub mod membership;
pub mod network;
pub mod node;
pub mod proposer;
pub mod read_barrier;
pub mod rpc;
pub mod service_ops;
pub mod service_spec;
pub mod services;
pub mod state;
pub mod state_machine;
pub mod tls;
pub mod types;
pub mod watch;
pub mod worker;

pub use error::{Error, NO_LEADER};
pub use manager::{Manager, ManagerConfig, ManagerStatus, StartMode};
pub use types::{Command, CommandResult, NodeId, Role, ShoalNode, TypeConfig};
