//! `GET /v1/catalog/snapshot`: everything a router renders from, in one blocking read — the
//! catalog as discovery sees it (every service's instances with their resolved address and
//! aggregated health, every node) and every Shoal service's labels (`shoal.http.host`, …).
//!
//! One watch instead of consul-template's one per service: `?index=N&wait=D` blocks until the
//! catalog or a service spec changed after N, as every Consul-style read does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use shoal_model::catalog::snapshot::Snapshot;
use shoal_model::spec::ServiceSpec;
use shoal_registry::cluster::manager::Manager;

use crate::consul::{answer, read};
use crate::query::Query;

/// The answer of `GET /v1/catalog/snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeSnapshot {
    /// The index to pass as `?index=` to wait for the next change.
    pub index: u64,
    /// The catalog (instances by service, nodes): the manager's own copy, shared.
    pub catalog: Arc<Snapshot>,
    /// Each Shoal service's labels, by service name (services registered otherwise have none).
    pub service_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the answer changes with: the catalog's index and the newest service spec change.
fn edge_index(s: &shoal_model::State) -> u64 {
    let specs = s.services.services.values().map(|svc| svc.modify_index).max().unwrap_or(0);
    s.catalog_snapshot_index().max(specs)
}

/// `GET /v1/catalog/snapshot` (`?index`, `?wait`, `?stale`, `?consistent`).
pub async fn snapshot(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let labels = read(&m, &q, |s| {
        let labels: BTreeMap<String, BTreeMap<String, String>> = s
            .services
            .services
            .values()
            .filter_map(|svc| Some((svc.name.clone(), ServiceSpec::from_text(&svc.spec).ok()?.labels)))
            .collect();
        (edge_index(s), labels)
    })
    .await;
    let (index, service_labels) = match labels {
        Ok(r) => r,
        Err(response) => return response,
    };
    // Built (or shared with the last one built) after the wait, at least as new as `index`'s
    // catalog part; the index answered is the one read before, so a change in between wakes the
    // next read at once rather than being missed.
    let catalog = m.catalog_snapshot(0, std::time::Duration::ZERO).await;
    answer(&m, index, EdgeSnapshot { index: index.max(1), catalog, service_labels })
}
