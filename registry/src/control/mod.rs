//! Checked operations that then write: service create/update/remove (the spec is read and checked
//! before anything is proposed), task dispatch to agents (assignments and status reports over the
//! cluster port) and the node's log source.
//!
//! May import: `shoal_model`, [`crate::cluster`], [`crate::store`], [`crate::rpc`], [`crate::error`].
//! Not `node`.

pub mod assignments;
pub mod logs;
pub mod services;
