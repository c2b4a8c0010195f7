//! The control loops that run on the Raft leader. This crate never opens a socket: it reads a
//! snapshot of the registry and returns what to write.
//!
//! ```text
//! registry state ──snapshot──▶ plan(&Snapshot, &[TaskToPlace]) ──▶ Plan (task → node | pending + why)
//!                                 │ filters (Pipeline): available, constraints, memory, cpu,
//!                                 │                     host ports, max replicas per node
//!                                 └ spread: fewest of this service, then fewest overall
//!                                   (spread=node.labels.K preferences first)
//! service + task tables ──▶ orchestrator::reconcile(tables, nodes, now) ──▶ commands + tasks to place
//! ```

#![warn(missing_docs)]

pub mod filter;
pub mod leader;
pub mod orchestrator;
pub mod plan;
pub mod snapshot;
pub mod updater;

pub use plan::{Decision, Plan, TaskToPlace, plan};
pub use snapshot::{NodeInfo, NodeUsage, Snapshot};
