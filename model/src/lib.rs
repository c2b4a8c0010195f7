//! Shoal's data contract: the records every part of the cluster reads, the one [`Command`] enum every
//! change goes through, and the pure [`State::apply`] that turns the Raft log into the tables.
//!
//! This crate is the bottom floor. It does no I/O, reads no clock, spawns nothing and knows nothing
//! of consensus, storage, TLS or HTTP: times and indexes come in as arguments, so every replica that
//! applies the same log reaches the same state, and any crate can use the model without pulling in
//! the cluster. See `README.md` for the flow and what may import this crate.

pub mod catalog;
pub mod cluster;
pub mod command;
pub mod duration;
pub mod kv;
pub mod lookup;
pub mod node;
pub mod services;
pub mod spec;
pub mod state;
pub mod vecmap;

pub use cluster::{ClusterCa, ClusterInfo};
pub use command::{Command, CommandResult, Refusal, RefusalKind};
pub use node::{Availability, NodeId, NodeRecord, NodeStatus, Resources, Role, ShoalNode};
pub use state::State;
pub use vecmap::VecMap;

/// Input that does not parse (an unknown enum name, a malformed value); the message says what to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);
