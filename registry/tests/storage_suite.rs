//! openraft's own storage conformance suite, run against Shoal's redb log store and state machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use shoal_model::NodeId;
use shoal_registry::store::TypeConfig;
use shoal_registry::store::log_store::LogStore;
use shoal_registry::store::state_machine::StateMachineStore;

/// Builds the stores; `from_disk`: the log keeps no durable entry in memory, so every read of one
/// is served from redb (the path a follower far behind takes).
struct RedbBuilder {
    from_disk: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("redb"));
        let log = if self.from_disk {
            LogStore::open_with_limits(db.clone(), true, 0, 0)?
        } else {
            LogStore::open(db.clone())?
        };
        let sm = StateMachineStore::open(db)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RedbBuilder { from_disk: false }) {
        panic!("openraft storage suite failed: {e}");
    }
}

#[test]
fn openraft_storage_suite_with_the_log_read_from_disk() {
    if let Err(e) = Suite::test_all(RedbBuilder { from_disk: true }) {
        panic!("openraft storage suite (log read from disk) failed: {e}");
    }
}
