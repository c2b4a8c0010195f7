//! Shoal's DNS server: Consul-style names (`web.service.shoal`, `_web._tcp.service.shoal`,
//! `h1.node.shoal`) answered by a hickory request handler from the node's watched copy of the
//! catalog.
//!
//! ```text
//! registry (Manager / Worker) ──SnapshotSource──▶ feed ──set──▶ SnapshotHandle ──get──▶ DnsHandler ──answer()──▶ client
//! ```
//! * [`answer`]: the pure answer to one question from one [`Snapshot`](shoal_model::catalog::snapshot::Snapshot).
//! * [`server`]: the hickory handler, the UDP+TCP server, the snapshot handle and the forwarder.
//! * [`feed`]: keeps the handle current with one blocking watch.
//!
//! See `README.md` in this crate.
#![warn(missing_docs)]

pub mod answer;
pub mod feed;
mod names;
pub mod server;

pub use answer::{Answer, DnsConfig, answer};
pub use feed::{Feed, SnapshotSource};
pub use server::{DnsError, DnsHandler, DnsServer, SnapshotHandle};
