//! Shoal's registry: the replicated store and the cluster.
//!
//! The rooms, from the ground up (a room imports only from rooms below it; `scripts/check-rooms.sh`
//! fails CI otherwise):
//!
//! | room | what |
//! |---|---|
//! | [`error`], [`files`], [`datadir`], [`host`], [`ids`] | the error every room returns; JSON files, the data dir and its format; this host's resources; random IDs and secrets |
//! | [`pki`] | the cluster CA, node certificates, rustls configs, the TLS listener, the gossip key |
//! | [`store`] | openraft glue: the redb log store, the state machine, group commit, read barrier, the watch |
//! | [`rpc`] | the cluster-port client, its wire types, the Raft network (knows nothing of the Manager) |
//! | [`cluster`] | the manager: Raft, the cluster port's server, joins, node table operations, demotion, liveness |
//! | [`control`] | checked operations that then write: services, task dispatch to agents, the log source |
//! | [`node`] | a process's life: boot, the worker, certificate renewal, the role switch |
//!
//! The data model ([`shoal_model`]) is below all of them. See `README.md` in this crate.

// openraft's storage traits fix `StorageError` (224 bytes) as the error type; boxing it at our
// boundaries would only add conversions.
#![allow(clippy::result_large_err)]

pub mod cluster;
pub mod control;
pub mod datadir;
pub mod error;
pub mod files;
pub mod host;
pub mod ids;
pub mod node;
pub mod pki;
pub mod rpc;
pub mod store;

pub use cluster::manager::{Manager, NodeConfig, NodeRow, StartMode};
pub use error::Error;
