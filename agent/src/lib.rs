//! The agent: runs this node's tasks through a container runtime and reports what happened.
//!
//! ```text
//! managers ──assignments (watch)──▶ runner ──▶ Executor::controller(task) ──▶ prepare/start/wait/shutdown
//!          ◀──task status (batched)──┘
//! ```
//! `exec.rs` is the runtime contract; `fake.rs` an in-memory runtime for tests (`--runtime fake`).
//! The Docker runtime (bollard, in exactly one module) comes with the agent issue.

#![warn(missing_docs)]

pub mod exec;
pub mod fake;
pub mod runner;

pub use exec::{Controller, ExecError, Executor, Exit};
pub use fake::FakeExecutor;
pub use runner::{Dispatcher, run};
