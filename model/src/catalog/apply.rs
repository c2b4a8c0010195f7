//! The catalog's commands and their pure apply. A command that would change nothing is applied as
//! `Applied(false)` and leaves every index where it was, so a resync or a repeated probe result
//! wakes no watcher; a command that cannot apply is refused whole, with nothing half-written.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::validate::{validate_check, validate_instance};
use super::{
    Catalog, Check, CheckSpec, Health, Instance, InstanceSpec, MAX_CHECKS_PER_INSTANCE, NODE_MAINTENANCE_ID,
    SERF_CHECK_ID, SERVICE_MAINTENANCE_PREFIX, Source, StoredDef, Text, texts, truncate_output,
};
use crate::command::{CommandResult, Refusal};
use crate::services::{ServiceTables, TaskState};

/// Changes to the catalog (variants of the one `Command` enum, nested to keep it short).
// A command is built once and moved into the log; boxing the instance would add an allocation and
// a `Box::new` at every call site for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Create or replace one instance on a cluster node. Checks that exist already (same ID and
    /// definition) keep their status, so re-registering does not flap an instance to critical.
    Register {
        /// The node's name.
        node: String,
        /// Who registers it.
        source: Source,
        /// The instance.
        instance: InstanceSpec,
    },
    /// The full list of one source's instances on a node (an agent's resync): instances of that
    /// source on that node that are not in the list are removed, the others registered as above.
    Sync {
        /// The node's name.
        node: String,
        /// The source whose instances the list is.
        source: Source,
        /// Every instance that source has on the node now.
        instances: Vec<InstanceSpec>,
    },
    /// Remove one instance and its checks.
    Deregister {
        /// The node's name.
        node: String,
        /// Service ID.
        id: String,
    },
    /// Results of checks on one node; only a changed status or output (or a TTL renewal) is a change.
    UpdateChecks {
        /// The node's name.
        node: String,
        /// The results.
        updates: Vec<CheckUpdate>,
    },
    /// Add or replace one check: a node-level one, or one of an instance's.
    RegisterCheck {
        /// The node's name.
        node: String,
        /// The instance it belongs to; `None`: the node.
        service_id: Option<String>,
        /// The check.
        check: CheckSpec,
    },
    /// Remove one check.
    DeregisterCheck {
        /// The node's name.
        node: String,
        /// Check ID.
        check_id: String,
    },
    /// Maintenance mode of a node (`service_id` `None`) or an instance: `reason` `Some` enables it
    /// (a critical `_node_maintenance` / `_service_maintenance:<id>` check), `None` disables it.
    Maintenance {
        /// The node's name.
        node: String,
        /// The instance, or the whole node.
        service_id: Option<String>,
        /// Why; `None` to end maintenance.
        reason: Option<String>,
    },
    /// `/v1/catalog/register`: a node (external unless it is a cluster node), and optionally an
    /// instance and a check on it. Nobody probes what is registered this way.
    CatalogRegister {
        /// Node name.
        node: String,
        /// Node address (external nodes).
        address: String,
        /// Node meta (external nodes).
        meta: BTreeMap<String, String>,
        /// Leave an existing node's address and meta as they are.
        skip_node_update: bool,
        /// An instance to register (source `catalog`).
        service: Option<InstanceSpec>,
        /// A check to register: on the instance named (`Some(service id)`) or on the node.
        check: Option<(Option<String>, CheckSpec)>,
    },
    /// `/v1/catalog/deregister`: a check, an instance, or (neither given) an external node with everything on it.
    CatalogDeregister {
        /// Node name.
        node: String,
        /// The instance to remove.
        service_id: Option<String>,
        /// The check to remove.
        check_id: Option<String>,
    },
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckUpdate {
    /// Check ID (on the command's node).
    pub check_id: String,
    /// New status.
    pub status: Health,
    /// Output.
    pub output: String,
    /// A TTL update (pass/warn/fail/update): counts as a change even when status and output are the
    /// same, so the check's owner restarts the TTL timer.
    pub ttl_renewal: bool,
}

/// What the catalog needs to know of the other tables to apply a command.
pub(crate) struct Context<'a> {
    /// Whether a cluster node of this name exists.
    pub cluster_node: &'a dyn Fn(&str) -> bool,
    /// Tasks, to refuse an instance for a task that is going away.
    pub tasks: &'a ServiceTables,
}

impl Catalog {
    pub(crate) fn apply(&mut self, index: u64, cmd: &CatalogCommand, cx: &Context) -> CommandResult {
        let r = match cmd {
            CatalogCommand::Register { node, source, instance } => {
                self.agent_node(node, cx).and_then(|()| self.register(index, node, *source, instance, cx))
            }
            CatalogCommand::Sync { node, source, instances } => {
                self.agent_node(node, cx).and_then(|()| self.sync(index, node, *source, instances, cx))
            }
            CatalogCommand::Deregister { node, id } => Ok(self.remove_instance(index, node, id).is_some()),
            CatalogCommand::UpdateChecks { node, updates } => Ok(self.update_checks(index, node, updates)),
            CatalogCommand::RegisterCheck { node, service_id, check } => {
                self.agent_node(node, cx).and_then(|()| self.register_check(index, node, service_id.as_deref(), check))
            }
            CatalogCommand::DeregisterCheck { node, check_id } => Ok(self.remove_check(index, node, check_id)),
            CatalogCommand::Maintenance { node, service_id, reason } => {
                self.agent_node(node, cx).and_then(|()| self.maintenance(index, node, service_id.as_deref(), reason))
            }
            CatalogCommand::CatalogRegister { node, address, meta, skip_node_update, service, check } => {
                self.catalog_register(index, node, address, meta, *skip_node_update, service, check, cx)
            }
            CatalogCommand::CatalogDeregister { node, service_id, check_id } => {
                Ok(self.catalog_deregister(index, node, service_id.as_deref(), check_id.as_deref()))
            }
        };
        match r {
            Ok(changed) => CommandResult::Applied(changed),
            Err(why) => CommandResult::Refused(why),
        }
    }

    fn agent_node(&self, node: &str, cx: &Context) -> Result<(), Refusal> {
        if (cx.cluster_node)(node) {
            Ok(())
        } else {
            Err(Refusal::not_found(format!("no cluster node named {node:?}")))
        }
    }

    /// Refuses an instance of a task that is not running here or is going away.
    fn task_may_register(node: &str, spec: &InstanceSpec, cx: &Context) -> Result<(), Refusal> {
        let Some(task_id) = &spec.task_id else { return Ok(()) };
        let Some(t) = cx.tasks.tasks.get(task_id) else {
            return Err(Refusal::not_found(format!("no such task: {task_id}")));
        };
        if t.desired > TaskState::Running || t.status.state.is_terminal() {
            return Err(Refusal::conflict(format!("task {task_id} is shutting down; its instance is not registered")));
        }
        let _ = node; // The task's node is the agent's own: the cluster port checks the reporter.
        Ok(())
    }

    pub(super) fn register(
        &mut self,
        index: u64,
        node: &str,
        source: Source,
        spec: &InstanceSpec,
        cx: &Context,
    ) -> Result<bool, Refusal> {
        validate_instance(spec)?;
        Self::task_may_register(node, spec, cx)?;
        self.check_ids_free(node, Some(&spec.id), spec.checks.iter().map(|c| c.id.as_str()))?;
        let old = self.instance(node, &spec.id).cloned();
        if old.as_ref().is_some_and(|o| o.same_as(source, spec)) {
            return Ok(false);
        }
        if let Some(o) = &old
            && o.name != spec.name
        {
            self.remove_instance(index, node, &spec.id);
        }
        let checks = spec
            .checks
            .iter()
            .map(|c| {
                let kept = old.as_ref().and_then(|o| o.checks.get(c.id.as_str())).filter(|k| k.def == c.def);
                let check = match kept {
                    Some(k) => Check {
                        name: c.name.as_str().into(),
                        notes: c.notes.as_str().into(),
                        modify_index: index,
                        ..k.clone()
                    },
                    None => Check::new(c.clone(), index),
                };
                (Text::from(c.id.as_str()), check)
            })
            .collect();
        let inst = Instance {
            id: spec.id.as_str().into(),
            name: spec.name.as_str().into(),
            node: node.into(),
            source,
            tags: texts(&spec.tags),
            address: spec.address.as_str().into(),
            port: spec.port,
            meta: spec.meta.clone().into(),
            weights: spec.weights,
            enable_tag_override: spec.enable_tag_override,
            task_id: spec.task_id.as_deref().map(Box::from),
            container_id: spec.container_id.as_deref().map(Box::from),
            checks,
            create_index: old.as_ref().filter(|o| o.name == spec.name).map_or(index, |o| o.create_index),
            modify_index: index,
        };
        self.put_instance(index, inst);
        Ok(true)
    }

    fn sync(
        &mut self,
        index: u64,
        node: &str,
        source: Source,
        specs: &[InstanceSpec],
        cx: &Context,
    ) -> Result<bool, Refusal> {
        // Check everything first: a sync is applied whole or not at all. A task that is shutting
        // down is left out rather than refusing the sync (the agent may not have heard yet).
        let mut keep = Vec::new();
        for spec in specs {
            validate_instance(spec)?;
            if Self::task_may_register(node, spec, cx).is_ok() {
                keep.push(spec);
            }
        }
        let wanted: std::collections::BTreeSet<&str> = keep.iter().map(|s| s.id.as_str()).collect();
        let stale: Vec<Text> = self
            .node_instances(node)
            .filter(|i| i.source == source && !wanted.contains(i.id.as_str()))
            .map(|i| i.id.clone())
            .collect();
        let mut changed = false;
        for id in stale {
            changed |= self.remove_instance(index, node, &id).is_some();
        }
        for spec in keep {
            match self.register(index, node, source, spec, cx) {
                Ok(c) => changed |= c,
                // Another source's instance with this ID, or a clashing check: that one is kept.
                Err(_) => continue,
            }
        }
        Ok(changed)
    }

    /// Refuses check IDs already used on `node` by a check that is not `own`'s.
    fn check_ids_free<'a>(
        &self,
        node: &str,
        own: Option<&str>,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), Refusal> {
        for id in ids {
            if id == SERF_CHECK_ID || self.node_checks.get(node).is_some_and(|n| n.checks.contains_key(id)) {
                return Err(Refusal::conflict(format!("check ID {id:?} is taken on node {node:?}")));
            }
            if let Some(other) =
                self.node_instances(node).find(|i| Some(i.id.as_str()) != own && i.checks.contains_key(id))
            {
                return Err(Refusal::conflict(format!(
                    "check ID {id:?} is taken on node {node:?} by service {:?}",
                    other.id
                )));
            }
        }
        Ok(())
    }

    fn put_instance(&mut self, index: u64, inst: Instance) {
        self.by_node.entry(inst.node.to_string()).or_default().insert(inst.id.clone(), inst.name.clone());
        let group = self.services.entry(inst.name.to_string()).or_default();
        group.index = index;
        group.instances.insert(inst);
        self.services_index = index;
    }

    /// Removes one instance; returns it.
    pub(crate) fn remove_instance(&mut self, index: u64, node: &str, id: &str) -> Option<Arc<Instance>> {
        let ids = self.by_node.get_mut(node)?;
        let name = ids.remove(id)?;
        if ids.is_empty() {
            self.by_node.remove(node);
        }
        let group = self.services.get_mut(name.as_str())?;
        let inst = group.instances.remove(node, id);
        group.index = index;
        if group.instances.is_empty() {
            self.services.remove(name.as_str());
        }
        // A service maintenance check goes with its instance.
        if let Some(n) = self.node_checks.get_mut(node)
            && n.checks.remove(format!("{SERVICE_MAINTENANCE_PREFIX}{id}").as_str()).is_some()
        {
            n.index = index;
            self.nodes_index = index;
        }
        self.services_index = index;
        inst
    }

    /// Removes the instances of a task that is going away (any node); whether there were any.
    pub(crate) fn forget_task(&mut self, index: u64, service_name: &str, task_id: &str) -> bool {
        let Some(group) = self.services.get(service_name) else { return false };
        let found: Vec<(Text, Text)> = group
            .instances
            .iter()
            .filter(|i| i.task_id.as_deref() == Some(task_id))
            .map(|i| (i.node.clone(), i.id.clone()))
            .collect();
        for (node, id) in &found {
            self.remove_instance(index, node, id);
        }
        !found.is_empty()
    }

    /// Removes everything of a node that left the cluster.
    pub(crate) fn forget_node(&mut self, index: u64, node: &str) {
        let ids: Vec<Text> = self.by_node.get(node).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for id in ids {
            self.remove_instance(index, node, &id);
        }
        if self.node_checks.remove(node).is_some() {
            self.nodes_index = index;
        }
    }

    /// A cluster node's record changed (its status: `serfHealth`; its address): its instances'
    /// services and the node list move to `index`.
    pub(crate) fn node_changed(&mut self, index: u64, node: &str) {
        self.touch(index, node, None);
    }

    fn check_mut(&mut self, node: &str, check_id: &str) -> Option<(&mut Check, Option<(Text, Text)>)> {
        if self.node_checks.get(node).is_some_and(|n| n.checks.contains_key(check_id)) {
            return self.node_checks.get_mut(node)?.checks.get_mut(check_id).map(|c| (c, None));
        }
        let (id, name) = self
            .by_node
            .get(node)?
            .iter()
            .find(|(id, name)| self.instance_in(name, node, id).is_some_and(|i| i.checks.contains_key(check_id)))
            .map(|(id, name)| (id.clone(), name.clone()))?;
        let inst = self.services.get_mut(name.as_str())?.instances.get_mut(node, &id)?;
        inst.checks.get_mut(check_id).map(|c| (c, Some((name, id))))
    }

    /// Marks what changed at `index` for the owner of a check (`None`: the node).
    fn touch(&mut self, index: u64, node: &str, owner: Option<(Text, Text)>) {
        match owner {
            None => {
                if let Some(n) = self.node_checks.get_mut(node) {
                    n.index = index;
                }
                self.nodes_index = index;
                // Node checks change every instance of the node: their services' indexes move.
                let names: Vec<Text> =
                    self.by_node.get(node).map(|m| m.values().cloned().collect()).unwrap_or_default();
                for name in names {
                    if let Some(g) = self.services.get_mut(name.as_str()) {
                        g.index = index;
                    }
                }
            }
            Some((name, id)) => {
                if let Some(g) = self.services.get_mut(name.as_str()) {
                    g.index = index;
                    if let Some(i) = g.instances.get_mut(node, &id) {
                        i.modify_index = index;
                    }
                }
            }
        }
        self.services_index = index;
    }

    pub(super) fn update_checks(&mut self, index: u64, node: &str, updates: &[CheckUpdate]) -> bool {
        let mut changed = false;
        for u in updates {
            let output = truncate_output(u.output.clone());
            let Some((check, owner)) = self.check_mut(node, &u.check_id) else { continue };
            if matches!(check.def.kind, super::CheckKind::Manual) && check.status == Health::Maintenance {
                continue; // Maintenance ends only through Maintenance.
            }
            if check.status == u.status && check.output == output && !u.ttl_renewal {
                continue;
            }
            check.status = u.status;
            check.output = output.into();
            if u.ttl_renewal {
                check.renewals += 1;
            }
            check.modify_index = index;
            self.touch(index, node, owner);
            changed = true;
        }
        changed
    }

    pub(super) fn register_check(
        &mut self,
        index: u64,
        node: &str,
        service_id: Option<&str>,
        spec: &CheckSpec,
    ) -> Result<bool, Refusal> {
        validate_check(spec)?;
        if let Some(sid) = service_id
            && self.instance(node, sid).is_none()
        {
            return Err(Refusal::not_found(format!("no service {sid:?} on node {node:?}")));
        }
        // The same ID may be replaced where it is, not taken from another owner.
        let existing_owner = self.check(node, &spec.id).map(|_| self.check_owner(node, &spec.id));
        if let Some(owner) = &existing_owner
            && owner.as_deref() != service_id
        {
            return Err(Refusal::conflict(format!("check ID {:?} is taken on node {node:?}", spec.id)));
        }
        let check = Check::new(spec.clone(), index);
        match service_id {
            None => {
                let n = self.node_checks.entry(node.to_string()).or_default();
                let old = n.checks.get(spec.id.as_str());
                let check = match old {
                    Some(o) if o.def == spec.def => Check {
                        name: spec.name.as_str().into(),
                        notes: spec.notes.as_str().into(),
                        modify_index: index,
                        ..o.clone()
                    },
                    _ => check,
                };
                n.checks.insert(spec.id.as_str().into(), check);
                self.touch(index, node, None);
            }
            Some(sid) => {
                let name = self.by_node[node][sid].clone();
                let inst = self.services.get_mut(name.as_str()).and_then(|g| g.instances.get_mut(node, sid));
                let Some(inst) = inst else { return Err(Refusal::not_found(format!("no service {sid:?}"))) };
                if !inst.checks.contains_key(spec.id.as_str()) && inst.checks.len() >= MAX_CHECKS_PER_INSTANCE {
                    return Err(Refusal::invalid(format!(
                        "a service may have at most {MAX_CHECKS_PER_INSTANCE} checks"
                    )));
                }
                inst.checks.insert(spec.id.as_str().into(), check);
                self.touch(index, node, Some((name, sid.into())));
            }
        }
        Ok(true)
    }

    /// The instance a check of `node` belongs to (`None`: the node).
    fn check_owner(&self, node: &str, check_id: &str) -> Option<Text> {
        self.node_instances(node).find(|i| i.checks.contains_key(check_id)).map(|i| i.id.clone())
    }

    pub(super) fn remove_check(&mut self, index: u64, node: &str, check_id: &str) -> bool {
        if let Some(n) = self.node_checks.get_mut(node)
            && n.checks.remove(check_id).is_some()
        {
            if n.checks.is_empty() {
                self.node_checks.remove(node);
            }
            self.touch(index, node, None);
            return true;
        }
        let Some(sid) = self.check_owner(node, check_id) else { return false };
        let name = self.by_node[node][sid.as_str()].clone();
        if let Some(i) = self.services.get_mut(name.as_str()).and_then(|g| g.instances.get_mut(node, &sid)) {
            i.checks.remove(check_id);
        }
        self.touch(index, node, Some((name, sid)));
        true
    }

    fn maintenance(
        &mut self,
        index: u64,
        node: &str,
        service_id: Option<&str>,
        reason: &Option<String>,
    ) -> Result<bool, Refusal> {
        let (id, name, what) = match service_id {
            None => (NODE_MAINTENANCE_ID.to_string(), "Node Maintenance Mode", "node"),
            Some(sid) => {
                if self.instance(node, sid).is_none() {
                    return Err(Refusal::not_found(format!("No service registered with ID {sid:?}")));
                }
                (format!("{SERVICE_MAINTENANCE_PREFIX}{sid}"), "Service Maintenance Mode", "service")
            }
        };
        let present = self.node_checks.get(node).is_some_and(|n| n.checks.contains_key(id.as_str()));
        match reason {
            None => Ok(present && self.remove_check(index, node, &id)),
            Some(_) if present => Ok(false),
            Some(reason) => {
                let notes = if reason.is_empty() {
                    format!(
                        "Maintenance mode is enabled for this {what}, but no reason was provided. This is a default message."
                    )
                } else {
                    reason.clone()
                };
                let check = Check {
                    id: id.as_str().into(),
                    name: name.into(),
                    notes: notes.into(),
                    def: StoredDef::MANUAL,
                    status: Health::Maintenance,
                    output: Text::default(),
                    renewals: 0,
                    create_index: index,
                    modify_index: index,
                };
                self.node_checks.entry(node.to_string()).or_default().checks.insert(id.into(), check);
                // A service's maintenance check lives with the node's but changes only that service.
                match service_id {
                    None => self.touch(index, node, None),
                    Some(sid) => {
                        if let Some(n) = self.node_checks.get_mut(node) {
                            n.index = index;
                        }
                        let name = self.by_node[node][sid].clone();
                        self.touch(index, node, Some((name, sid.into())));
                    }
                }
                Ok(true)
            }
        }
    }
}
