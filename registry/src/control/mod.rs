//! Checked operations that then write: service create/update/remove (the spec is read and checked
//! before anything is proposed), task dispatch to agents (assignments and status reports over the
//! cluster port), the catalog's writes and per-node view, and the node's log source.
//!
//! May import: `shoal_model`, [`crate::cluster`], [`crate::store`], [`crate::rpc`], [`crate::error`].
//! Not `node`.

pub mod assignments;
pub mod catalog;
pub mod logs;
pub mod services;

/// The cluster-port routes of this room that every node of the cluster may call (task dispatch,
/// the catalog's node view and writes); the cluster room puts them behind its certificate check.
pub fn member_routes() -> axum::Router<std::sync::Arc<crate::cluster::manager::Manager>> {
    assignments::routes().merge(catalog::routes())
}
