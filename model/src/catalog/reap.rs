//! When an instance leaves the catalog because it stayed critical: pure decisions, the clock passed
//! in. The owning agent asks [`expired_on_node`] with the times its checks turned critical (its own
//! clock); the leader asks [`expired_down_nodes`] with the times nodes went down (its clock, reset
//! on a leader change, so a new leader waits a full period rather than reaping early).

use std::collections::BTreeMap;

use super::{CatalogCommand, Health, Instance, Source, Text};
use crate::state::State;

/// Consul raises `DeregisterCriticalServiceAfter` to at least this (`check_deregister_interval_min`).
pub const MIN_DEREGISTER_AFTER_MS: u64 = 60_000;

/// The instances (of one node) to deregister at `now_ms`: those with a check that has a
/// `deregister_after_ms` and has been critical (since `critical_since[check id]`) for longer.
/// Instances registered through the catalog API are never reaped (no agent owns them), as in Consul.
pub fn expired_on_node<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    critical_since: &BTreeMap<String, u64>,
    now_ms: u64,
) -> Vec<Text> {
    instances
        .into_iter()
        .filter(|i| i.source.agent_owned())
        .filter(|i| {
            i.checks.values().any(|c| {
                let Some(after) = c.def.deregister_after_ms else { return false };
                let after = after.max(MIN_DEREGISTER_AFTER_MS);
                c.status == Health::Critical
                    && critical_since.get(c.id.as_str()).is_some_and(|since| now_ms.saturating_sub(*since) > after)
            })
        })
        .map(|i| i.id.clone())
        .collect()
}

/// What the leader writes at `now_ms` for nodes down since `down_since[node name]` for longer than
/// `after_ms` (`--deregister-critical-after`): their registrator and agent instances go (a down
/// node's tasks are replaced by the orchestrator and leave with their shutdown).
pub fn expired_down_nodes(
    state: &State,
    down_since: &BTreeMap<String, u64>,
    now_ms: u64,
    after_ms: u64,
) -> Vec<CatalogCommand> {
    let mut out = Vec::new();
    for (node, since) in down_since {
        if now_ms.saturating_sub(*since) <= after_ms {
            continue;
        }
        let still_down = state.nodes.values().any(|n| &n.name == node && n.status == crate::node::NodeStatus::Down);
        if !still_down {
            continue;
        }
        for i in state.catalog.node_instances(node) {
            if matches!(i.source, Source::Registrator | Source::Agent) {
                out.push(CatalogCommand::Deregister { node: node.clone(), id: i.id.to_string() });
            }
        }
    }
    out
}
