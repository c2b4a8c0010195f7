//! The node table's operations: worker heartbeats (which register workers and keep them ready),
//! the rows `node ls` and Docker's `/nodes` show, inspect, update, promote and remove.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::manager::Manager;
use crate::error::Error;
use crate::rpc::RpcError;
use shoal_model::lookup::{Lookup, find};
use shoal_model::{Availability, Command, NodeId, NodeStatus, Resources, Role};

/// One row of `shoal node ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    /// Node ID, 16 hex digits (a string: JSON numbers lose precision above 2^53).
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Cluster address.
    pub address: String,
    /// HTTP API address.
    pub http_address: String,
    /// Ready or Down.
    pub status: String,
    /// Leader, Reachable, Unreachable, Joining.
    pub manager_status: String,
    /// Role.
    pub role: Role,
    /// active, pause or drain.
    pub availability: Availability,
    /// Operator-set labels.
    pub labels: BTreeMap<String, String>,
    /// CPUs and memory the node reported.
    pub resources: Resources,
}

/// `POST /v1/nodes/{node}/update`: what to change (absent fields stay as they are).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeUpdateSpec {
    /// active, pause or drain.
    pub availability: Option<String>,
    /// Labels to add or overwrite.
    pub label_add: BTreeMap<String, String>,
    /// Labels to remove.
    pub label_rm: Vec<String>,
}

/// Finds `query` among `rows` by full ID, name, or unique ID prefix (as Docker does).
pub fn resolve_node<'a>(rows: &'a [NodeRow], query: &str) -> Result<&'a NodeRow, Error> {
    if query.is_empty() {
        return Err(Error::BadRequest("a node ID, ID prefix or name is needed".into()));
    }
    match find(rows.iter(), |r| &r.id, Some(&|r: &NodeRow| r.name.as_str()), query) {
        Lookup::Found(r) => Ok(r),
        Lookup::Missing => Err(Error::NotFound(format!("no such node: {query}"))),
        Lookup::AmbiguousName(many) => {
            Err(Error::BadRequest(format!("node name {query:?} is ambiguous: {} nodes have it; use an ID", many.len())))
        }
        Lookup::AmbiguousPrefix(many) => Err(Error::BadRequest(format!(
            "node ID prefix {query:?} is ambiguous: it matches {}; use more characters",
            many.iter().map(|r| format!("{} ({})", r.id, r.name)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl Manager {
    /// A worker's heartbeat: the leader records when it was seen and registers the node in the node
    /// table the first time (or when its addresses change); followers forward it.
    pub async fn handle_heartbeat(
        &self,
        hb: crate::rpc::wire::Heartbeat,
    ) -> Result<crate::rpc::wire::ManagerList, Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<crate::rpc::wire::ManagerList, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/heartbeat", &hb, Duration::from_secs(3)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        // One look at the table: removed? already registered with these addresses? which role?
        let (removed, known, role) = self.view.read(|s| {
            let record = s.nodes.get(&hb.id);
            let known = record
                .is_some_and(|n| n.name == hb.name && n.cluster_addr == hb.cluster_addr && n.http_addr == hb.http_addr);
            // The record's role wins: a worker being promoted keeps reporting until it has switched.
            (s.removed.contains(&hb.id), known, record.map_or(Role::Worker, |n| n.role))
        });
        if removed {
            return Err(Error::Forbidden(format!("node {:016x} was removed from this cluster", hb.id)));
        }
        if !known {
            self.write(Command::NodeUpsert {
                id: hb.id,
                name: hb.name.clone(),
                cluster_addr: hb.cluster_addr.clone(),
                http_addr: hb.http_addr.clone(),
                role,
                resources: hb.resources,
            })
            .await?;
            tracing::info!(node_id = format!("{:016x}", hb.id), name = %hb.name, "worker registered");
        }
        self.workers_seen.lock().expect("workers lock").insert(hb.id, Instant::now());
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let managers = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (n.cluster_addr.clone(), n.http_addr.clone())))
            .collect();
        Ok(crate::rpc::wire::ManagerList { managers, role })
    }

    /// `node promote`: a ready worker is told (through its heartbeat) to become a manager; it gets a
    /// manager certificate and joins Raft as a learner, then a voter.
    pub async fn promote_node(&self, query: &str) -> Result<NodeRow, Error> {
        let row = self.inspect_node(query).await?;
        if row.role == Role::Manager {
            return Err(Error::BadRequest(format!("node {} is already a manager", row.name)));
        }
        if row.status != "Ready" {
            return Err(Error::BadRequest(format!("node {} is down: a node must be up to be promoted", row.name)));
        }
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        self.write(Command::NodeSetRole { id, role: Role::Manager }).await?;
        self.inspect_node(&row.id).await
    }

    /// The managers as the leader sees them. On a follower this is answered by forwarding to the
    /// leader's HTTP API (see the API layer); here it requires leadership.
    pub fn node_rows(&self) -> Result<Vec<NodeRow>, Error> {
        if self.leader_to_forward()?.is_some() {
            return Err(Error::NotLeader);
        }
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let reach = 3 * self.config.election_timeout.1;
        let records = self.view.read(|s| s.nodes.clone());
        let mut out = Vec::new();
        for (id, node) in membership.nodes() {
            let reachable = *id == self.id || self.contacts.last(*id).is_some_and(|t| t.elapsed() < reach);
            let manager_status = if *id == self.id {
                "Leader"
            } else if !voters.contains(id) {
                if reachable { "Joining" } else { "Unreachable" }
            } else if reachable {
                "Reachable"
            } else {
                "Unreachable"
            };
            out.push(NodeRow {
                id: format!("{id:016x}"),
                name: records.get(id).map_or_else(|| node.name.clone(), |r| r.name.clone()),
                address: node.cluster_addr.clone(),
                http_address: node.http_addr.clone(),
                status: if *id == self.id {
                    "Ready".into()
                } else {
                    records.get(id).map_or(NodeStatus::Unknown, |r| r.status).as_str().into()
                },
                manager_status: manager_status.into(),
                role: Role::Manager,
                availability: records.get(id).map(|r| r.availability).unwrap_or_default(),
                labels: records.get(id).map(|r| r.labels.clone()).unwrap_or_default(),
                resources: records.get(id).map(|r| r.resources.clone()).unwrap_or_default(),
            });
        }
        // Nodes outside the Raft membership: workers, and workers being promoted (role manager in
        // the table, not yet a learner).
        for (id, n) in records.iter().filter(|(id, _)| membership.get_node(id).is_none()) {
            out.push(NodeRow {
                id: format!("{id:016x}"),
                name: n.name.clone(),
                address: n.cluster_addr.clone(),
                http_address: n.http_addr.clone(),
                status: n.status.as_str().into(),
                manager_status: if n.role == Role::Manager { "Promoting".into() } else { String::new() },
                role: n.role,
                availability: n.availability,
                labels: n.labels.clone(),
                resources: n.resources.clone(),
            });
        }
        Ok(out)
    }

    /// The node table with live status as the leader sees it, from any manager (a follower asks the
    /// leader over the cluster RPC).
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, Error> {
        match self.leader_to_forward()? {
            None => self.node_rows(),
            Some(leader) => {
                let res: Result<Result<Vec<NodeRow>, Error>, RpcError> =
                    self.rpc.call(&leader.cluster_addr, "/cluster/nodes", &(), Duration::from_secs(5)).await;
                res.map_err(|_| Error::NoLeader)?
            }
        }
    }

    /// One node, by ID, unique ID prefix or name.
    pub async fn inspect_node(&self, query: &str) -> Result<NodeRow, Error> {
        let rows = self.nodes().await?;
        resolve_node(&rows, query).cloned()
    }

    /// Applies operator changes to a node and returns it as it is now.
    pub async fn update_node(&self, query: &str, spec: NodeUpdateSpec) -> Result<NodeRow, Error> {
        let availability = spec
            .availability
            .as_deref()
            .map(str::parse::<Availability>)
            .transpose()
            .map_err(|e| Error::BadRequest(e.0))?;
        for k in spec.label_add.keys().chain(spec.label_rm.iter()) {
            if k.is_empty() || k.contains('=') {
                return Err(Error::BadRequest(format!(
                    "invalid label key {k:?}: use --label-add key=value, --label-rm key"
                )));
            }
        }
        let row = self.inspect_node(query).await?;
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        let cmd = Command::NodeUpdate { id, availability, label_add: spec.label_add, label_rm: spec.label_rm };
        match self.write(cmd).await? {
            shoal_model::CommandResult::Refused(r) => Err(r.into()),
            _ => self.inspect_node(&row.id).await,
        }
    }

    /// Removes a node: refused while it is up unless `force`; a manager leaves the Raft membership
    /// first (refused if that would leave no manager or lose the quorum). Its certificate is no
    /// longer accepted afterwards.
    pub async fn remove_node(&self, query: &str, force: bool) -> Result<(), Error> {
        let row = self.inspect_node(query).await?;
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        if row.status == "Ready" && !force {
            return Err(Error::BadRequest(format!(
                "node {} ({}) is up: stop it first, or use --force to remove it anyway",
                row.name, row.id
            )));
        }
        if row.role == Role::Manager {
            if row.manager_status == "Leader" {
                return Err(Error::BadRequest(format!(
                    "node {} is the leader: stop it (another manager takes over) and remove it from there",
                    row.name
                )));
            }
            let rows = self.nodes().await?;
            let voters: Vec<&NodeRow> =
                rows.iter().filter(|r| r.role == Role::Manager && r.manager_status != "Joining").collect();
            let remaining = voters.len().saturating_sub(1);
            let reachable = voters.iter().filter(|r| r.id != row.id && r.status == "Ready").count();
            if remaining == 0 || reachable < remaining / 2 + 1 {
                return Err(Error::BadRequest(format!(
                    "removing {} would leave {remaining} manager(s) with {reachable} reachable: the cluster would lose its quorum",
                    row.name
                )));
            }
            self.change_voters_remove(id).await?;
        }
        self.write(Command::NodeRemove { id }).await?;
        Ok(())
    }

    async fn change_voters_remove(&self, id: NodeId) -> Result<(), Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<(), Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/remove-voter", &id, Duration::from_secs(30)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        // retain = false: the node leaves the membership entirely (not kept as a learner).
        self.retry_membership(|| self.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false))
            .await
    }

    /// The cluster RPC side of removing a voter (the leader only).
    pub async fn remove_voter_as_leader(&self, id: NodeId) -> Result<(), Error> {
        self.change_voters_remove(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> NodeRow {
        NodeRow {
            id: id.into(),
            name: name.into(),
            address: String::new(),
            http_address: String::new(),
            status: "Ready".into(),
            manager_status: String::new(),
            role: Role::Worker,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            resources: Resources::default(),
        }
    }

    #[test]
    fn resolve_by_id_prefix_or_name() {
        let rows =
            vec![row("abc0000000000001", "web1"), row("abd0000000000002", "web2"), row("f000000000000003", "abc")];
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("full id", Ok("abc0000000000001")),
            ("unique prefix", Ok("abd0000000000002")),
            ("name", Ok("abd0000000000002")),
            ("name wins over prefix", Ok("f000000000000003")),
            ("ambiguous prefix", Err("is ambiguous: it matches abc0000000000001 (web1), abd0000000000002 (web2)")),
            ("missing", Err("no such node: zzz")),
            ("empty", Err("a node ID, ID prefix or name is needed")),
        ];
        let queries = ["abc0000000000001", "abd", "web2", "abc", "ab", "zzz", ""];
        for ((name, want), q) in cases.iter().zip(queries) {
            match (resolve_node(&rows, q), want) {
                (Ok(r), Ok(id)) => assert_eq!(r.id, *id, "case {name}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "case {name}: {e}"),
                (got, want) => panic!("case {name}: got {:?}, want {want:?}", got.map(|r| &r.id)),
            }
        }
    }
}
