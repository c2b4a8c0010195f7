//! Shoal's edge: consul-template's job, push-driven. Templates (minijinja) are rendered from a
//! node's copy of the catalog and KV, validated by the proxy's own check, written atomically and
//! reloaded without dropping a request.
//!
//! See `README.md` for the flow; the parts, in the order data goes through them:
//! - [`source`]: the blocking reads of a node's API (`GET /v1/catalog/snapshot`, the KV store);
//! - [`view`]: what a template sees; [`render`]: the pure render; [`routes`]: the HTTP routes the
//!   shipped templates write;
//! - [`template`]: one template's pass (render → install → reload); [`output`]: validated,
//!   atomic installs;
//! - [`reload`]: the [`reload::Reloader`] trait and its implementations;
//! - [`runner`]: the watches and the quiescence window; [`status`]: the status endpoint;
//! - [`proxy`]: the built-in edge proxy (`--listen`), routing from the same [`routes`].

pub mod output;
pub mod proxy;
pub mod reload;
pub mod render;
pub mod routes;
pub mod runner;
pub mod source;
pub mod status;
pub mod template;
pub mod view;
