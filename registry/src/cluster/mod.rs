//! The cluster: a manager's Raft instance and its cluster port, joins, node table operations,
//! demotion with leader hand-over, and the leader's liveness verdicts.
//!
//! ```text
//! cluster port ─▶ server ─┬─ /raft/*            ─▶ openraft
//!                         ├─ /cluster/write     ─▶ Manager::write_as_leader
//!                         ├─ /cluster/join, certificate, renew ─▶ membership
//!                         └─ /cluster/heartbeat ─▶ nodes (the node table)
//! ```
//! May import: `shoal_model`, [`crate::store`], [`crate::rpc`], [`crate::pki`], [`crate::error`],
//! [`crate::files`], [`crate::datadir`]. Not `control` or `node`: what they add to the cluster port
//! comes in as routes.

pub mod config;
pub mod demotion;
pub mod liveness;
pub mod manager;
pub mod membership;
pub mod nodes;
pub mod server;
pub mod status;
