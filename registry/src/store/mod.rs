//! The replicated store: openraft glue around the model's pure [`shoal_model::State::apply`].
//!
//! ```text
//! write ─▶ Proposer (group commit: concurrent writes → one Command::Batch)
//!            └─▶ openraft ─append─▶ LogStore (redb; one writer thread: one txn, one fsync per batch)
//!                   └─ quorum ─▶ StateMachineStore: State::apply, index = log index ─▶ IndexWatch
//! read ─▶ ReadBarrier (shared ReadIndex) ─▶ IndexWatch::query(min_index, deadline, view)
//! ```
//! May import: `shoal_model`, [`crate::error`], [`crate::files`]. Nothing above.

pub mod log_store;
pub mod proposer;
pub mod read_barrier;
pub mod state_machine;
pub mod watch;

use std::io::Cursor;

use shoal_model::{Command, CommandResult, NodeId, ShoalNode};

openraft::declare_raft_types!(
    /// Shoal's Raft types: [`Command`] in, [`CommandResult`] out, `u64` node IDs.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = ShoalNode,
);
