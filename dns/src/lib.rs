//! Shoal's DNS server: Consul-style names (`web.service.shoal`, `_web._tcp.service.shoal`,
//! `h1.node.shoal`) answered by a hickory request handler from the node's watched copy of the
//! catalog.
//!
//! ```text
//! registry (Manager / Worker) ──SnapshotSource──▶ feed ──set──▶ SnapshotHandle ──get──▶ DnsHandler ──answer()──▶ client
//! ```
//! * [`answer`](mod@answer): the pure answer to one question from one [`Snapshot`](shoal_model::catalog::snapshot::Snapshot).
//! * [`server`]: the hickory handler, the UDP+TCP server, the snapshot handle and the forwarder.
//! * [`udp`]: the UDP reader, which shares the server between sources (a queue per address,
//!   answered in turn), so one client's flood does not stop the others' answers.
//! * [`feed`]: keeps the handle current with one blocking watch.
//! * `fuzzing` (feature `fuzzing`): the UDP query path as the server runs it and the invariants
//!   of its replies, for the fuzz target in `dns/fuzz/` and for the tests.
//!
//! See `README.md` in this crate.
#![warn(missing_docs)]

pub mod answer;
mod cache;
pub mod feed;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod names;
pub mod server;
pub mod udp;

pub use answer::{Answer, DnsConfig, answer};
pub use feed::{Feed, SnapshotSource};
pub use server::{DnsError, DnsHandler, DnsServer, SnapshotHandle};
