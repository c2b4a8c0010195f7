//! openraft's own storage conformance suite, run against Shoal's redb log store and state machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use shoal_model::NodeId;
use shoal_registry::store::TypeConfig;
use shoal_registry::store::log_store::LogStore;
use shoal_registry::store::state_machine::StateMachineStore;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("redb"));
        let log = LogStore::open(db.clone())?;
        let sm = StateMachineStore::open(db)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
