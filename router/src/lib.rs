//! Shoal's edge: consul-template's job, push-driven. Templates (minijinja) are rendered from a
//! node's copy of the catalog and KV, validated by the proxy's own check, written atomically and
//! reloaded without dropping a request.
//!
//! See `README.md` for the flow; the parts:
//! - [`reload`]: the [`reload::Reloader`] trait and its implementations.

pub mod reload;
pub mod render;
pub mod routes;
pub mod view;
