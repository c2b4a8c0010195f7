//! `ServiceTables::apply`: one command at one Raft index, deterministic (no clock, no I/O: times
//! come in the commands). One method per command; a refused command changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::{NewTask, ServiceCommand, ServiceRecord, ServiceTables, TaskRecord, TaskState, TaskStatus, UpdateStatus};
use crate::command::{CommandResult, Refusal};
use crate::node::NodeId;

/// What the tasks of a spec run: its `TaskTemplate` and published ports.
fn task_part(spec: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_str(spec).ok()?;
    Some((v["TaskTemplate"].clone(), v["EndpointSpec"]["Ports"].clone()))
}

fn not_found(msg: impl Into<String>) -> CommandResult {
    CommandResult::Refused(Refusal::not_found(msg))
}

fn conflict(msg: impl Into<String>) -> CommandResult {
    CommandResult::Refused(Refusal::conflict(msg))
}

fn invalid(msg: impl Into<String>) -> CommandResult {
    CommandResult::Refused(Refusal::invalid(msg))
}

fn name_taken(name: &str, other: &ServiceRecord) -> CommandResult {
    conflict(format!("name conflicts with an existing object: service {name} already exists (ID {})", other.id))
}

impl ServiceTables {
    /// Applies one command at `index`. Deterministic.
    pub fn apply(&mut self, index: u64, cmd: &ServiceCommand) -> CommandResult {
        match cmd {
            ServiceCommand::Create { id, name, spec, at } => self.create(index, id, name, spec, at),
            ServiceCommand::Update { id, version, name, spec, at, rollback } => {
                match self.updatable(id, *version, name) {
                    Ok(s) => s.replace_spec(index, name, spec, at, *rollback),
                    Err(refused) => refused,
                }
            }
            ServiceCommand::Remove { id } => self.remove_service(index, id),
            ServiceCommand::SetUpdateStatus { id, status } => self.set_update_status(index, id, status.as_ref()),
            ServiceCommand::CreateTasks { tasks, at } => self.create_tasks(index, tasks, at),
            ServiceCommand::Assign { id, node_id, message, at } => self.assign(index, id, *node_id, message, at),
            ServiceCommand::SetDesired { id, desired } => self.set_desired(index, id, *desired),
            ServiceCommand::SetStatus { id, node_id, status } => self.set_status(index, id, *node_id, status),
            ServiceCommand::RemoveTask { id } => self.remove_task(index, id),
        }
    }

    /// A new service at spec version 1; its name and ID must be free.
    fn create(&mut self, index: u64, id: &str, name: &str, spec: &str, at: &str) -> CommandResult {
        if let Some(other) = self.by_name(name) {
            return name_taken(name, other);
        }
        if self.services.contains_key(id) {
            return conflict(format!("service ID {id} is taken"));
        }
        self.services.insert(
            id.to_string(),
            ServiceRecord {
                id: id.to_string(),
                name: name.to_string(),
                spec: spec.to_string(),
                previous_spec: None,
                spec_version: 1,
                spec_history: BTreeMap::from([(1, spec.to_string())]),
                created_at: at.to_string(),
                updated_at: at.to_string(),
                update_status: None,
                rolling_back: false,
                create_index: index,
                modify_index: index,
            },
        );
        CommandResult::Done
    }

    /// The service an update may change: it exists, the new name is free, and the update was made
    /// from its current version.
    fn updatable(&mut self, id: &str, version: u64, name: &str) -> Result<&mut ServiceRecord, CommandResult> {
        if let Some(other) = self.by_name(name).filter(|o| o.id != id) {
            return Err(name_taken(name, other));
        }
        let Some(s) = self.services.get_mut(id) else {
            return Err(not_found(format!("service {id} not found")));
        };
        if s.modify_index != version {
            return Err(conflict(format!(
                "update out of sequence: service {} is at version {}, the update was made from version {version}; read it again and retry",
                s.name, s.modify_index
            )));
        }
        Ok(s)
    }

    /// Deletes a service; its tasks are marked for removal (the reaper deletes them once ended).
    fn remove_service(&mut self, index: u64, id: &str) -> CommandResult {
        if self.services.remove(id).is_none() {
            return not_found(format!("service {id} not found"));
        }
        for t in self.tasks.values_mut().filter(|t| t.service_id == id) {
            if t.desired < TaskState::Remove {
                t.desired = TaskState::Remove;
                t.modify_index = index;
            }
        }
        CommandResult::Done
    }

    fn set_update_status(&mut self, index: u64, id: &str, status: Option<&UpdateStatus>) -> CommandResult {
        match self.services.get_mut(id) {
            None => not_found(format!("service {id} not found")),
            Some(s) => {
                s.update_status = status.cloned();
                s.modify_index = index;
                CommandResult::Done
            }
        }
    }

    /// All or none: every task's service must exist and every ID be free.
    fn create_tasks(&mut self, index: u64, tasks: &[NewTask], at: &str) -> CommandResult {
        for t in tasks {
            if !self.services.contains_key(&t.service_id) {
                return not_found(format!("service {} not found", t.service_id));
            }
            if self.tasks.contains_key(&t.id) {
                return conflict(format!("task ID {} is taken", t.id));
            }
        }
        for t in tasks {
            self.tasks.insert(t.id.clone(), TaskRecord::created(t, at, index));
        }
        CommandResult::Done
    }

    /// Places a task (or records why it stays pending); only before any node has taken it.
    fn assign(&mut self, index: u64, id: &str, node_id: Option<NodeId>, message: &str, at: &str) -> CommandResult {
        match self.tasks.get_mut(id) {
            None => not_found(format!("task {id} not found")),
            Some(t) if t.status.state > TaskState::Pending => {
                conflict(format!("task {id} is already {}", t.status.state.as_str()))
            }
            Some(t) => {
                let state = if node_id.is_some() { TaskState::Assigned } else { TaskState::Pending };
                if t.status.state == state && t.status.message == message {
                    return CommandResult::Applied(false);
                }
                t.node_id = node_id.or(t.node_id);
                t.status =
                    TaskStatus { state, timestamp: at.to_string(), message: message.to_string(), ..t.status.clone() };
                t.modify_index = index;
                CommandResult::Applied(true)
            }
        }
    }

    /// Managers' write: forward only.
    fn set_desired(&mut self, index: u64, id: &str, desired: TaskState) -> CommandResult {
        match self.tasks.get_mut(id) {
            None => not_found(format!("task {id} not found")),
            Some(t) if desired < t.desired => invalid(format!(
                "task {id}: desired state cannot go back from {} to {}",
                t.desired.as_str(),
                desired.as_str()
            )),
            Some(t) if desired == t.desired => CommandResult::Applied(false),
            Some(t) => {
                t.desired = desired;
                t.modify_index = index;
                CommandResult::Applied(true)
            }
        }
    }

    /// The assigned node's write: forward only, and only from that node.
    fn set_status(&mut self, index: u64, id: &str, node_id: NodeId, status: &TaskStatus) -> CommandResult {
        match self.tasks.get_mut(id) {
            None => not_found(format!("task {id} not found")),
            Some(t) if t.node_id != Some(node_id) => {
                invalid(format!("task {id} is not assigned to node {node_id:016x}"))
            }
            Some(t) if status.state < t.status.state => invalid(format!(
                "task {id}: observed state cannot go back from {} to {}",
                t.status.state.as_str(),
                status.state.as_str()
            )),
            Some(t) if *status == t.status => CommandResult::Applied(false),
            Some(t) => {
                t.status = status.clone();
                t.modify_index = index;
                CommandResult::Applied(true)
            }
        }
    }

    /// The reaper's delete; a task already gone is no change.
    fn remove_task(&mut self, index: u64, id: &str) -> CommandResult {
        let Some(t) = self.tasks.remove(id) else {
            return CommandResult::Applied(false);
        };
        self.last_task_removal = index;
        // Forget specs no task refers to any more (keep the current one).
        if let Some(s) = self.services.get_mut(&t.service_id) {
            let used: BTreeSet<u64> = self
                .tasks
                .values()
                .filter(|o| o.service_id == t.service_id)
                .map(|o| o.spec_version)
                .chain([s.spec_version])
                .collect();
            s.spec_history.retain(|v, _| used.contains(v));
        }
        CommandResult::Applied(true)
    }
}

impl ServiceRecord {
    /// Takes a new spec (the checks are done). Only a change to what the tasks run makes them out of
    /// date (swarmkit's IsTaskDirty): scaling or renaming keeps the running tasks.
    fn replace_spec(&mut self, index: u64, name: &str, spec: &str, at: &str, rollback: bool) -> CommandResult {
        let old = std::mem::replace(&mut self.spec, spec.to_string());
        let dirty = task_part(&old) != task_part(spec);
        self.previous_spec = Some(old);
        self.name = name.to_string();
        if dirty {
            self.spec_version += 1;
            self.rolling_back = rollback;
        }
        // As swarmkit: an update starts with no status (the updater sets "updating"); a
        // rollback is "rollback_started" at once, so a client watching sees it begin.
        self.update_status = rollback.then(|| UpdateStatus {
            state: "rollback_started".into(),
            started_at: at.to_string(),
            completed_at: None,
            message: "manually requested rollback".into(),
        });
        self.spec_history.insert(self.spec_version, spec.to_string());
        self.updated_at = at.to_string();
        self.modify_index = index;
        CommandResult::Done
    }
}

impl TaskRecord {
    /// A created task: state `new`, at `index`.
    fn created(t: &NewTask, at: &str, index: u64) -> Self {
        TaskRecord {
            id: t.id.clone(),
            service_id: t.service_id.clone(),
            slot: t.slot,
            node_id: t.node_id,
            spec_version: t.spec_version,
            desired: t.desired,
            status: TaskStatus {
                state: TaskState::New,
                timestamp: at.to_string(),
                message: "created".into(),
                err: None,
                container_id: None,
                exit_code: None,
            },
            created_at: at.to_string(),
            create_index: index,
            modify_index: index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(t: &mut ServiceTables, index: u64, id: &str, name: &str) -> CommandResult {
        let cmd = ServiceCommand::Create {
            id: id.into(),
            name: name.into(),
            spec: format!("{{\"Name\":\"{name}\"}}"),
            at: "t".into(),
        };
        t.apply(index, &cmd)
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus {
            state,
            timestamp: "t".into(),
            message: String::new(),
            err: None,
            container_id: None,
            exit_code: None,
        }
    }

    #[test]
    fn names_are_unique_and_updates_need_the_current_version() {
        let mut t = ServiceTables::default();
        assert_eq!(create(&mut t, 5, "s1", "web"), CommandResult::Done);
        assert!(
            matches!(create(&mut t, 6, "s2", "web"), CommandResult::Refused(m) if m.message.contains("name conflicts"))
        );
        let update = |version| ServiceCommand::Update {
            id: "s1".into(),
            version,
            name: "web".into(),
            spec: "{\"Name\":\"web\",\"X\":1,\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"b\"}}}".into(),
            at: "t2".into(),
            rollback: false,
        };
        assert!(
            matches!(t.apply(7, &update(4)), CommandResult::Refused(m) if m.message.contains("update out of sequence"))
        );
        assert_eq!(t.services["s1"].spec_version, 1, "a refused update changes nothing");
        assert_eq!(t.apply(8, &update(5)), CommandResult::Done);
        let s = &t.services["s1"];
        assert_eq!((s.spec_version, s.modify_index, s.previous_spec.as_deref()), (2, 8, Some("{\"Name\":\"web\"}")));
        assert!(s.spec.contains("\"X\":1"), "the spec is kept verbatim");
        assert!(matches!(t.apply(9, &update(5)), CommandResult::Refused(_)), "the old version is stale now");
        // A change outside the task template (a scale) keeps the tasks up to date.
        let scale = ServiceCommand::Update {
            id: "s1".into(),
            version: 8,
            name: "web".into(),
            spec: "{\"Name\":\"web\",\"X\":2,\"Mode\":{\"Replicated\":{\"Replicas\":9}},\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"b\"}}}".into(),
            at: "t3".into(),
            rollback: false,
        };
        assert_eq!(t.apply(10, &scale), CommandResult::Done);
        assert_eq!(t.services["s1"].spec_version, 2, "a scale is not a new task spec");
    }

    #[test]
    fn task_states_never_go_back_and_only_the_assigned_node_reports() {
        let mut t = ServiceTables::default();
        create(&mut t, 1, "s1", "web");
        let new = NewTask {
            id: "t1".into(),
            service_id: "s1".into(),
            slot: 1,
            node_id: None,
            spec_version: 1,
            desired: TaskState::Running,
        };
        assert_eq!(t.apply(2, &ServiceCommand::CreateTasks { tasks: vec![new], at: "t".into() }), CommandResult::Done);
        let assign =
            ServiceCommand::Assign { id: "t1".into(), node_id: Some(7), message: "assigned".into(), at: "t".into() };
        assert_eq!(t.apply(3, &assign), CommandResult::Applied(true));
        let report = |node, state| ServiceCommand::SetStatus { id: "t1".into(), node_id: node, status: status(state) };
        assert!(
            matches!(t.apply(4, &report(8, TaskState::Running)), CommandResult::Refused(m) if m.message.contains("not assigned to node"))
        );
        assert_eq!(t.apply(5, &report(7, TaskState::Running)), CommandResult::Applied(true));
        assert!(
            matches!(t.apply(6, &report(7, TaskState::Starting)), CommandResult::Refused(m) if m.message.contains("cannot go back"))
        );
        assert!(matches!(t.apply(7, &assign), CommandResult::Refused(m) if m.message.contains("already running")));
        let desired = |d| ServiceCommand::SetDesired { id: "t1".into(), desired: d };
        assert_eq!(t.apply(8, &desired(TaskState::Shutdown)), CommandResult::Applied(true));
        assert!(matches!(t.apply(9, &desired(TaskState::Running)), CommandResult::Refused(_)));
        assert_eq!(t.tasks["t1"].desired, TaskState::Shutdown);
        // Removing the service marks its tasks for removal; the reaper deletes them.
        assert_eq!(t.apply(10, &ServiceCommand::Remove { id: "s1".into() }), CommandResult::Done);
        assert_eq!(t.tasks["t1"].desired, TaskState::Remove);
        assert_eq!(t.apply(11, &ServiceCommand::RemoveTask { id: "t1".into() }), CommandResult::Applied(true));
        assert!(t.tasks.is_empty());
    }

    fn any_state() -> impl proptest::strategy::Strategy<Value = TaskState> {
        use TaskState::*;
        proptest::sample::select(vec![
            New, Pending, Assigned, Accepted, Preparing, Ready, Starting, Running, Complete, Shutdown, Failed,
            Rejected, Remove, Orphaned,
        ])
    }

    proptest::proptest! {
        /// Whatever managers and nodes propose, in any order, neither state of a task moves backwards,
        /// and a refused command changes nothing.
        #[test]
        fn no_task_state_moves_backwards(steps in proptest::collection::vec((proptest::bool::ANY, any_state(), 0u64..3), 1..60)) {
            let mut t = ServiceTables::default();
            create(&mut t, 1, "s1", "web");
            let new = NewTask { id: "t1".into(), service_id: "s1".into(), slot: 1, node_id: Some(1), spec_version: 1, desired: TaskState::Running };
            t.apply(2, &ServiceCommand::CreateTasks { tasks: vec![new], at: "t".into() });
            for (i, (desired, state, node)) in steps.into_iter().enumerate() {
                let before = t.tasks["t1"].clone();
                let cmd = if desired {
                    ServiceCommand::SetDesired { id: "t1".into(), desired: state }
                } else {
                    ServiceCommand::SetStatus { id: "t1".into(), node_id: node, status: status(state) }
                };
                let r = t.apply(3 + i as u64, &cmd);
                let after = &t.tasks["t1"];
                proptest::prop_assert!(after.desired >= before.desired);
                proptest::prop_assert!(after.status.state >= before.status.state);
                proptest::prop_assert_eq!(after.spec_version, before.spec_version);
                if matches!(r, CommandResult::Refused(_)) {
                    proptest::prop_assert_eq!(after, &before);
                }
            }
        }
    }
}
