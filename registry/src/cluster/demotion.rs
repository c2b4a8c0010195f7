//! `node demote`: a manager leaves the Raft voters through a safe membership change and carries on
//! as a worker. Demoting the leader hands leadership over first, so the cluster keeps a leader.
//!
//! ```text
//! any manager ──/cluster/demote──▶ leader L
//!   L is the one demoted?  hand over: hold local writes and reads, stop heartbeats, wait out the
//!                          followers' leader lease, ask the most up-to-date voter T to campaign,
//!                          wait until T leads; then forward the demotion to T
//!   quorum check ─▶ NodeSetRole(worker) ─▶ change_membership(remove voter) ─▶ tell the node
//! demoted node: /cluster/demoted ─▶ stops Raft and its cluster port, renews into a worker
//!                                   certificate and runs as a worker (cli's run loop)
//! ```
//!
//! openraft 0.9 has no leadership transfer; the hand-over uses what it has: runtime switches for
//! heartbeats, `trigger().elect()` on the target, and the leader lease (= election timeout max)
//! during which followers refuse to vote for anyone else.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::cluster::manager::Manager;
use crate::error::Error;
use crate::rpc::RpcError;
use shoal_model::{Command, NodeId, NodeStatus, Role};

/// Whether demoting `id` leaves a cluster that still has a quorum. `reachable` is the set of voters
/// known to be up.
pub fn check_quorum(voters: &BTreeSet<NodeId>, reachable: &BTreeSet<NodeId>, id: NodeId) -> Result<(), String> {
    let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
    if remaining.is_empty() {
        return Err("it is the last manager: a cluster needs at least one; promote another node first".into());
    }
    let up = remaining.iter().filter(|v| reachable.contains(v)).count();
    let quorum = remaining.len() / 2 + 1;
    if up < quorum {
        return Err(format!(
            "the {} remaining managers would have only {up} reachable, and a quorum needs {quorum}; bring managers back or add one first",
            remaining.len()
        ));
    }
    Ok(())
}

impl Manager {
    /// `node demote NODE`, from any manager.
    pub async fn demote_node(&self, query: &str) -> Result<crate::NodeRow, Error> {
        let row = self.inspect_node(query).await?;
        if row.role != Role::Manager {
            return Err(Error::BadRequest(format!("node {} is already a worker", row.name)));
        }
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        self.demote_via_leader(id).await?;
        Ok(crate::NodeRow { role: Role::Worker, manager_status: String::new(), ..row })
    }

    async fn demote_via_leader(&self, id: NodeId) -> Result<(), Error> {
        for _ in 0..3 {
            let res = match self.leader_to_forward()? {
                None => self.demote_as_leader(id).await,
                Some(leader) => {
                    let res: Result<Result<(), Error>, RpcError> =
                        self.rpc.call(&leader.cluster_addr, "/cluster/demote", &id, Duration::from_secs(30)).await;
                    res.map_err(|e| Error::Unavailable(e.to_string()))?
                }
            };
            match res {
                // Leadership moved (e.g. it was just handed over): ask the new leader.
                Err(Error::NotLeader) => {
                    self.raft
                        .wait(Some(Duration::from_secs(3)))
                        .metrics(|m| m.current_leader.is_some(), "a leader")
                        .await
                        .ok();
                }
                other => return other,
            }
        }
        Err(Error::NoLeader)
    }

    /// The leader side of a demotion.
    pub async fn demote_as_leader(&self, id: NodeId) -> Result<(), Error> {
        let (voters, leader) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.membership_config.membership().voter_ids().collect::<BTreeSet<_>>(), m.current_leader)
        };
        if leader != Some(self.id) {
            return Err(Error::NotLeader);
        }
        if !voters.contains(&id) {
            return Err(Error::BadRequest(format!("node {id:016x} is not a voting manager")));
        }
        let records = self.view.read(|s| s.nodes.clone());
        let reachable: BTreeSet<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| *v == self.id || records.get(v).is_some_and(|r| r.status == NodeStatus::Ready))
            .collect();
        let name = records.get(&id).map_or_else(|| format!("{id:016x}"), |r| r.name.clone());
        check_quorum(&voters, &reachable, id)
            .map_err(|why| Error::BadRequest(format!("cannot demote {name}: {why}")))?;
        if id == self.id {
            self.hand_over(&voters, &reachable).await?;
            // Now a follower: the new leader finishes the demotion.
            return Err(Error::NotLeader);
        }
        self.write(Command::NodeSetRole { id, role: Role::Worker }).await?;
        self.remove_voter_as_leader(id).await?;
        tracing::info!(node_id = format!("{id:016x}"), name = %name, "manager demoted to worker");
        // Tell the node, so it switches to worker mode; if it is unreachable it learns on restart.
        if let Some(addr) = records.get(&id).map(|r| r.cluster_addr.clone()) {
            let told: Result<Result<(), Error>, RpcError> =
                self.rpc.call(&addr, "/cluster/demoted", &id, Duration::from_secs(5)).await;
            if let Some(e) = match told {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            } {
                tracing::warn!(node_id = format!("{id:016x}"), error = %e, "could not tell the demoted node");
            }
        }
        Ok(())
    }

    /// Hands leadership to the most up-to-date reachable voter and waits until it leads.
    async fn hand_over(&self, voters: &BTreeSet<NodeId>, reachable: &BTreeSet<NodeId>) -> Result<(), Error> {
        let (target, addr) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            let matched =
                |v: &NodeId| m.replication.as_ref().and_then(|r| r.get(v).cloned().flatten()).map_or(0, |l| l.index);
            let target = voters
                .iter()
                .filter(|v| **v != self.id && reachable.contains(v))
                .max_by_key(|v| matched(v))
                .copied()
                .ok_or_else(|| Error::BadRequest("no other reachable manager to hand leadership to".into()))?;
            let addr = m.membership_config.membership().get_node(&target).map(|n| n.cluster_addr.clone());
            (target, addr.ok_or(Error::Internal("the target has no address".into()))?)
        };
        tracing::info!(to = format!("{target:016x}"), "handing leadership over before the demotion");
        let _gate = self.close_gate();
        self.raft.runtime_config().heartbeat(false);
        let result = async {
            // Let in-flight writes reach the target, then let the followers' lease run out: until
            // then they refuse to vote for anyone but this leader.
            let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
            self.raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(
                    |m| {
                        m.replication
                            .as_ref()
                            .and_then(|r| r.get(&target).cloned().flatten())
                            .is_some_and(|l| l.index >= last)
                    },
                    "the target to hold the whole log",
                )
                .await
                .map_err(|e| Error::Unavailable(format!("hand-over: {e}")))?;
            tokio::time::sleep(self.config.election_timeout.1 + self.config.heartbeat * 2).await;
            let asked: Result<Result<(), Error>, RpcError> =
                self.rpc.call(&addr, "/cluster/campaign", &(), Duration::from_secs(3)).await;
            asked
                .map_err(|e| Error::Unavailable(format!("hand-over: the target did not campaign: {e}")))?
                .map_err(|e| Error::Unavailable(format!("hand-over: the target did not campaign: {e}")))?;
            self.raft
                .wait(Some(Duration::from_secs(3)))
                .metrics(|m| m.current_leader == Some(target), "the target to lead")
                .await
                .map_err(|e| Error::Unavailable(format!("hand-over: {e}")))?;
            Ok(())
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        if result.is_ok() {
            tracing::info!(to = format!("{target:016x}"), "leadership handed over");
        }
        result
    }

    /// The cluster RPC side of `/cluster/campaign`: start an election now.
    pub async fn campaign(&self) -> Result<(), Error> {
        self.raft.trigger().elect().await.map_err(|e| Error::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_rules() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<_>>();
        type Case<'a> = (&'a str, &'a [u64], &'a [u64], u64, bool);
        let cases: [Case; 6] = [
            ("last manager", &[1], &[1], 1, false),
            ("3 up, demote one", &[1, 2, 3], &[1, 2, 3], 3, true),
            ("3 voters, one down, demote an up one", &[1, 2, 3], &[1, 2], 2, false),
            ("3 voters, one down, demote the down one", &[1, 2, 3], &[1, 2], 3, true),
            ("2 up, demote one", &[1, 2], &[1, 2], 2, true),
            ("5 voters, 2 down, demote an up one", &[1, 2, 3, 4, 5], &[1, 2, 3], 3, false),
        ];
        for (name, voters, up, id, ok) in cases {
            assert_eq!(check_quorum(&set(voters), &set(up), id).is_ok(), ok, "{name}");
        }
    }
}
