//! A process's life: settle the node's identity and certificate, then run it as a manager or a
//! worker; the worker's side of the cluster (heartbeat, assignments); the certificate renewal every
//! role runs; and the role switch on promotion and demotion.
//!
//! ```text
//! start ─▶ identity + certificate ─┬─▶ Manager::launch (cluster/) ─┐
//!                                  └─▶ Worker::launch              ├─▶ renewal::run (every role)
//!   promoted ─▶ become_manager ◀───┘        demoted ─▶ become_worker┘
//! ```
//! May import every room of this crate. Nothing in this crate imports `node`.

pub mod renewal;
pub mod start;
pub mod worker;

pub use start::{RunningNode, become_manager, become_worker, start};
