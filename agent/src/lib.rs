//! The agent: runs this node's tasks through a container runtime and reports what happened.
//!
//! ```text
//! managers ──assignments (watch)──▶ runner ──▶ Executor::controller(task) ──▶ step: prepare/start/wait/shutdown
//!          ◀──task status (batched)──┘
//! catalog ──node's entries (watch)──▶ checks::run ──▶ probes, TTL timers ──▶ results (on change, batched)
//! ```
//! `exec.rs` is the runtime contract and `step`; `docker/` the Docker runtime (the only module
//! that uses bollard); `fake.rs` an in-memory runtime for tests (`--runtime fake`). Both pass the
//! same conformance suite (`tests/conformance.rs`). `checks/` runs the node's health checks.

#![warn(missing_docs)]

pub mod checks;
pub mod docker;
pub mod exec;
pub mod fake;
pub mod link;
pub mod registrator;
pub mod runner;

pub use checks::{ContainerExec, run as run_checks};
pub use docker::{DockerExecutor, RuntimeNode};
pub use exec::{Controller, ExecError, Executor, Exit, LogLine, LogStream, Owned, Step, step};
pub use fake::FakeExecutor;
pub use link::{CatalogLink, MemoryCatalog};
pub use registrator::{ContainerSource, NodeFacts};
pub use runner::{Dispatcher, run};
