//! The feeder: one blocking watch on the catalog (`GET /v1/catalog/snapshot?index=N`); every
//! answer with a new index becomes a new [`Table`], swapped in whole. Requests already running
//! keep the table they loaded; the next one sees the new table. Nothing is reloaded, no
//! connection changes hands.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::table::Table;
use crate::source::Source;
use crate::view::View;

/// How long one blocking read waits before it is re-issued.
const WATCH_WAIT: Duration = Duration::from_secs(60);
/// The pause after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the catalog through `source` forever, storing each new table into `table`.
pub async fn follow(source: Arc<dyn Source>, domain: String, table: Arc<ArcSwap<Table>>) {
    let mut index = 0u64;
    let mut failing = false;
    loop {
        let wait = if table.load().ready { WATCH_WAIT } else { Duration::ZERO };
        match source.snapshot(index, wait).await {
            Ok(snap) => {
                if failing {
                    tracing::info!(index = snap.index, "the catalog answers again");
                    failing = false;
                }
                if snap.index != index || !table.load().ready {
                    let view = View::from_snapshot(&snap, &domain);
                    let next = Table::build(&view, &table.load());
                    tracing::debug!(index = snap.index, hosts = next.hosts(), "route table swapped");
                    table.store(Arc::new(next));
                }
                // An index that went backwards (a restored or new cluster) starts over from 0.
                index = if snap.index < index { 0 } else { snap.index };
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the catalog watch failed; routing with the last table until it answers");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
