//! The deterministic, in-memory state machine: every table, one index.
//!
//! `apply` is a pure function of (state, index, command): no clock, no randomness, no I/O, so every
//! replica that applies the same log reaches the same state. The Raft log index is each write's version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::ClusterInfo;
use crate::command::{Command, CommandResult, Refusal};
use crate::kv::KvTable;
use crate::node::{NodeId, NodeRecord, NodeStatus, Role};
use crate::services::TaskState;

/// Everything the registry stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The index of the last log entry applied (0 before any). Set by the store for every entry,
    /// including those that change no table (blank and membership entries); not part of the
    /// snapshot's bytes, where the store keeps the full log ID beside the tables.
    #[serde(skip)]
    pub index: u64,
    /// Cluster identity; `None` until the first manager writes it.
    pub cluster: Option<ClusterInfo>,
    /// The node table.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Nodes removed from the cluster: their certificates are no longer accepted.
    pub removed: std::collections::BTreeSet<NodeId>,
    /// The KV table.
    pub kv: KvTable,
    /// Services and tasks.
    #[serde(default)]
    pub services: crate::services::ServiceTables,
    /// The service catalog with health (last: the snapshot of on-disk format 2 ends before it).
    #[serde(default)]
    pub catalog: crate::catalog::Catalog,
}

impl State {
    /// The index of the last applied entry (0 before anything was applied).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Applies one command at `index`. Deterministic.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        self.index = self.index.max(index);
        match cmd {
            Command::InitCluster { cluster_id, ca, manager_secret, worker_secret } => {
                if self.cluster.is_some() {
                    return CommandResult::Refused(Refusal::conflict("cluster is already initialised"));
                }
                self.cluster = Some(ClusterInfo {
                    cluster_id: cluster_id.clone(),
                    ca: ca.clone(),
                    manager_secret: manager_secret.clone(),
                    worker_secret: worker_secret.clone(),
                });
                CommandResult::Done
            }
            Command::RotateToken { role, secret } => match self.cluster.as_mut() {
                None => CommandResult::Refused(Refusal::invalid("cluster is not initialised")),
                Some(c) => {
                    match role {
                        Role::Manager => c.manager_secret = secret.clone(),
                        Role::Worker => c.worker_secret = secret.clone(),
                    }
                    CommandResult::Done
                }
            },
            Command::NodeUpsert { id, name, cluster_addr, http_addr, role, resources } => {
                let old = self.nodes.get(id);
                let create_index = old.map_or(index, |n| n.create_index);
                let availability = old.map(|n| n.availability).unwrap_or_default();
                let labels = old.map(|n| n.labels.clone()).unwrap_or_default();
                // A node registers itself, so it is up when its record is first written.
                let status = old.map_or(NodeStatus::Ready, |n| n.status);
                self.nodes.insert(
                    *id,
                    NodeRecord {
                        id: *id,
                        name: name.clone(),
                        cluster_addr: cluster_addr.clone(),
                        http_addr: http_addr.clone(),
                        role: *role,
                        availability,
                        labels,
                        resources: resources.clone(),
                        status,
                        create_index,
                        modify_index: index,
                    },
                );
                self.catalog.node_changed(index, name);
                CommandResult::Done
            }
            Command::NodeUpdate { id, availability, label_add, label_rm } => match self.nodes.get_mut(id) {
                None => CommandResult::Refused(Refusal::not_found(format!("no such node: {id:016x}"))),
                Some(n) => {
                    if let Some(a) = availability {
                        n.availability = *a;
                    }
                    for k in label_rm {
                        n.labels.remove(k);
                    }
                    n.labels.extend(label_add.iter().map(|(k, v)| (k.clone(), v.clone())));
                    n.modify_index = index;
                    CommandResult::Done
                }
            },
            Command::NodeSetRole { id, role } => match self.nodes.get_mut(id) {
                None => CommandResult::Refused(Refusal::not_found(format!("no such node: {id:016x}"))),
                Some(n) => {
                    n.role = *role;
                    n.modify_index = index;
                    CommandResult::Done
                }
            },
            Command::NodeSetStatus { id, status } => match self.nodes.get_mut(id) {
                None => CommandResult::Refused(Refusal::not_found(format!("no such node: {id:016x}"))),
                Some(n) if n.status == *status => CommandResult::Applied(false),
                Some(n) => {
                    n.status = *status;
                    n.modify_index = index;
                    // serfHealth is read from the status: the node's instances changed health with it.
                    let name = n.name.clone();
                    self.catalog.node_changed(index, &name);
                    CommandResult::Applied(true)
                }
            },
            Command::NodeRemove { id } => {
                self.removed.insert(*id);
                let removed = self.nodes.remove(id);
                if let Some(n) = &removed {
                    self.catalog.forget_node(index, &n.name);
                    self.catalog.nodes_index = index;
                }
                CommandResult::Applied(removed.is_some())
            }
            Command::Service(c) => {
                let leaving = self.services.tasks_named_by(c);
                let r = self.services.apply(index, c);
                // A task told to go leaves the catalog in this same entry, before its container stops.
                for (task_id, service_name) in leaving {
                    let going = self
                        .services
                        .tasks
                        .get(&task_id)
                        .is_none_or(|t| t.desired > TaskState::Running || t.status.state.is_terminal());
                    if going {
                        self.catalog.forget_task(index, &service_name, &task_id);
                    }
                }
                r
            }
            Command::Catalog(c) => {
                let nodes = &self.nodes;
                let cluster_node = |name: &str| nodes.values().any(|n| n.name == name);
                let cx = crate::catalog::apply::Context { cluster_node: &cluster_node, tasks: &self.services };
                self.catalog.apply(index, c, &cx)
            }
            Command::KvSet { key, value, flags, cas } => {
                CommandResult::Applied(self.kv.set(index, key, value.clone(), *flags, *cas))
            }
            Command::KvDelete { key, recurse, cas } => {
                CommandResult::Applied(self.kv.delete(index, key, *recurse, *cas))
            }
            Command::Batch(cmds) => CommandResult::Batch(
                cmds.iter()
                    .map(|c| match c {
                        Command::Batch(_) => CommandResult::Refused(Refusal::invalid("batches do not nest")),
                        c => self.apply(index, c),
                    })
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_once_and_tokens() {
        let mut s = State::default();
        let init = Command::InitCluster {
            cluster_id: "c1".into(),
            ca: None,
            manager_secret: "m".into(),
            worker_secret: "w".into(),
        };
        assert_eq!(s.apply(1, &init), CommandResult::Done);
        assert!(matches!(s.apply(2, &init), CommandResult::Refused(_)));
        let c = s.cluster.clone().unwrap();
        assert_eq!(c.token(Role::Manager), "SHOAL-1-c1-m");
        assert_eq!(c.role_of("SHOAL-1-c1-w"), Some(Role::Worker));
        assert_eq!(c.role_of("SHOAL-1-c1-x"), None);
        s.apply(3, &Command::RotateToken { role: Role::Manager, secret: "m2".into() });
        let c = s.cluster.clone().unwrap();
        assert_eq!(c.role_of("SHOAL-1-c1-m"), None, "old manager token refused after rotation");
        assert_eq!(c.role_of("SHOAL-1-c1-m2"), Some(Role::Manager));
    }

    #[test]
    fn node_upsert_keeps_create_index() {
        let mut s = State::default();
        let up = |name: &str| Command::NodeUpsert {
            id: 7,
            name: name.into(),
            cluster_addr: "127.0.0.1:2377".into(),
            http_addr: "127.0.0.1:8500".into(),
            role: Role::Manager,
            resources: crate::node::Resources { cpus: 2, memory_bytes: 1 << 30, engine_version: "20.10.24".into() },
        };
        s.apply(4, &up("a"));
        s.apply(9, &up("b"));
        let n = &s.nodes[&7];
        assert_eq!((n.create_index, n.modify_index, n.name.as_str()), (4, 9, "b"));
    }

    #[test]
    fn batch_applies_in_order_at_one_index() {
        let mut s = State::default();
        let set = |v: &str, cas| Command::KvSet { key: "k".into(), value: v.into(), flags: 0, cas };
        let r = s.apply(
            7,
            &Command::Batch(vec![set("a", Some(0)), set("b", Some(0)), set("c", Some(7)), Command::Batch(vec![])]),
        );
        assert_eq!(
            r,
            CommandResult::Batch(vec![
                CommandResult::Applied(true),
                CommandResult::Applied(false),
                CommandResult::Applied(true),
                CommandResult::Refused(Refusal::invalid("batches do not nest")),
            ])
        );
        let e = s.kv.get("k").unwrap();
        assert_eq!((e.value.as_slice(), e.create_index, e.modify_index), (&b"c"[..], 7, 7));
    }

    #[test]
    fn same_log_same_state() {
        let cmds = [
            Command::KvSet { key: "a".into(), value: b"1".to_vec(), flags: 0, cas: None },
            Command::KvSet { key: "a".into(), value: b"2".to_vec(), flags: 0, cas: Some(1) },
            Command::KvSet { key: "b".into(), value: b"3".to_vec(), flags: 1, cas: Some(0) },
            Command::KvDelete { key: "a".into(), recurse: false, cas: Some(99) },
        ];
        let run = || {
            let mut s = State::default();
            let results: Vec<_> = cmds.iter().enumerate().map(|(i, c)| s.apply(i as u64 + 1, c)).collect();
            (s, results)
        };
        let (a, ra) = run();
        let (b, rb) = run();
        assert_eq!(ra, rb);
        assert_eq!(a, b);
        assert_eq!(
            ra,
            vec![
                CommandResult::Applied(true),
                CommandResult::Applied(true),
                CommandResult::Applied(true),
                CommandResult::Applied(false)
            ]
        );
    }
}
