//! What to write: a full resync's commands (none when the catalog already holds exactly what the
//! containers say) and one container's commands after an event. Pure.

use std::collections::{BTreeMap, BTreeSet};

use shoal_model::catalog::{CatalogCommand, CheckKind, CheckUpdate, Instance, InstanceSpec, Source};
use shoal_registry::control::catalog::NodeCatalog;

/// The sources the registrator owns on its node.
pub(super) const SOURCES: [Source; 2] = [Source::Task, Source::Registrator];

/// Every instance the node's containers make, by source (both sources always present, so an empty
/// list still removes what is left of a source).
pub(super) type Wanted = BTreeMap<Source, Vec<InstanceSpec>>;

/// Container ID → the IDs of its instances.
pub(super) type Tracked = BTreeMap<String, BTreeSet<String>>;

/// The resync's write: one `Sync` per source, then the Docker health of every instance that has
/// one; `None` when `view` (the catalog's entries for the node, if they could be read) already
/// holds all of it, so a quiet node writes nothing.
pub(super) fn resync_commands(node: &str, wanted: &Wanted, view: Option<&NodeCatalog>) -> Option<Vec<CatalogCommand>> {
    if let Some(view) = view
        && SOURCES.iter().all(|s| holds(view, *s, wanted.get(s).map_or(&[][..], Vec::as_slice)))
    {
        return None;
    }
    let mut cmds: Vec<CatalogCommand> = SOURCES
        .iter()
        .map(|s| CatalogCommand::Sync {
            node: node.to_string(),
            source: *s,
            instances: wanted.get(s).cloned().unwrap_or_default(),
        })
        .collect();
    let specs: Vec<&InstanceSpec> = wanted.values().flatten().collect();
    cmds.extend(health_updates(node, &specs));
    Some(cmds)
}

/// A container's write after an event: its instances now (registered; a registration that changes
/// nothing is not a change), its Docker health, and the removal of instances it no longer has.
pub(super) fn container_commands(
    node: &str,
    now: &[(Source, InstanceSpec)],
    before: &BTreeSet<String>,
) -> Vec<CatalogCommand> {
    let ids: BTreeSet<&str> = now.iter().map(|(_, i)| i.id.as_str()).collect();
    let mut cmds: Vec<CatalogCommand> = before
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .map(|id| CatalogCommand::Deregister { node: node.to_string(), id: id.clone() })
        .collect();
    cmds.extend(now.iter().map(|(source, i)| CatalogCommand::Register {
        node: node.to_string(),
        source: *source,
        instance: i.clone(),
    }));
    let specs: Vec<&InstanceSpec> = now.iter().map(|(_, i)| i).collect();
    cmds.extend(health_updates(node, &specs));
    cmds
}

/// Registering keeps a check's status (so a resync does not flap it): the Docker health of a
/// container is written as a check result instead, which is a no-op write when it is unchanged.
fn health_updates(node: &str, specs: &[&InstanceSpec]) -> Option<CatalogCommand> {
    let updates: Vec<CheckUpdate> = specs
        .iter()
        .flat_map(|i| &i.checks)
        .filter(|c| matches!(c.def.kind, CheckKind::Docker { .. }))
        .map(|c| CheckUpdate { check_id: c.id.clone(), status: c.status, output: c.output.clone(), ttl_renewal: false })
        .collect();
    (!updates.is_empty()).then(|| CatalogCommand::UpdateChecks { node: node.to_string(), updates })
}

/// Whether `view` holds exactly `wanted` for `source`: the same IDs, each unchanged (the Docker
/// health included; other checks' status is the check runner's).
fn holds(view: &NodeCatalog, source: Source, wanted: &[InstanceSpec]) -> bool {
    let have: BTreeMap<&str, &Instance> =
        view.instances.iter().filter(|i| i.source == source).map(|i| (i.id.as_str(), i)).collect();
    have.len() == wanted.len() && wanted.iter().all(|w| have.get(w.id.as_str()).is_some_and(|i| same(i, w)))
}

fn same(i: &Instance, w: &InstanceSpec) -> bool {
    i.name == w.name
        && i.tags == w.tags
        && i.address == w.address
        && i.port == w.port
        && i.meta == w.meta
        && i.weights == w.weights
        && i.enable_tag_override == w.enable_tag_override
        && i.task_id.as_deref() == w.task_id.as_deref()
        && i.container_id.as_deref() == w.container_id.as_deref()
        && i.checks.len() == w.checks.len()
        && w.checks.iter().all(|c| {
            i.checks.get(c.id.as_str()).is_some_and(|old| {
                let docker = matches!(c.def.kind, CheckKind::Docker { .. });
                old.name == c.name
                    && old.notes == c.notes
                    && old.def == c.def
                    && (!docker || (old.status == c.status && old.output == c.output))
            })
        })
}

/// The container → instance IDs map after a resync: what was written, and whatever else the
/// catalog still holds of this registrator's sources (so a removal never depends on memory alone;
/// an ID written now belongs to the container that has it now).
pub(super) fn tracked(wanted: &Wanted, view: Option<&NodeCatalog>) -> Tracked {
    let mut t = Tracked::new();
    for i in wanted.values().flatten() {
        if let Some(c) = &i.container_id {
            t.entry(c.clone()).or_default().insert(i.id.clone());
        }
    }
    let claimed: BTreeSet<&str> = wanted.values().flatten().map(|i| i.id.as_str()).collect();
    for i in view.into_iter().flat_map(|v| &v.instances) {
        if let (true, false, Some(c)) = (SOURCES.contains(&i.source), claimed.contains(i.id.as_str()), &i.container_id)
        {
            t.entry(c.to_string()).or_default().insert(i.id.to_string());
        }
    }
    t
}
