//! A compact, serialisable copy of what discovery answers from: every service's instances with
//! their resolved address and aggregated health, and every node's address. DNS servers and routers
//! keep one of these per node (a worker gets it from a manager over the cluster port) and answer
//! from it without a Raft round-trip; it is rebuilt when the catalog's index moves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Health, Weights};
use crate::state::State;

/// One instance as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInstance {
    /// Service ID (unique on its node).
    pub id: String,
    /// The node's name.
    pub node: String,
    /// The address to connect to: the instance's, else its node's.
    pub address: String,
    /// Whether `address` is the instance's own (not its node's): DNS SRV targets differ.
    pub own_address: bool,
    /// Port (0: none).
    pub port: u16,
    /// Tags.
    pub tags: Vec<String>,
    /// Meta.
    pub meta: BTreeMap<String, String>,
    /// The worst of its checks and its node's.
    pub health: Health,
    /// DNS weights.
    pub weights: Weights,
}

/// One node as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotNode {
    /// Address.
    pub address: String,
    /// Node meta.
    pub meta: BTreeMap<String, String>,
}

/// Every service and node, at one index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The index it was read at: the catalog's (instances, checks and nodes).
    pub index: u64,
    /// Instances by service name, by node then ID (the built-in `consul` service included).
    pub services: BTreeMap<String, Vec<SnapshotInstance>>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, SnapshotNode>,
}

impl State {
    /// The index [`State::catalog_snapshot`] changes with.
    pub fn catalog_snapshot_index(&self) -> u64 {
        self.checks_index()
    }

    /// The catalog as discovery answers from it.
    pub fn catalog_snapshot(&self) -> Snapshot {
        let (index, names) = self.catalog_services();
        let services = names
            .keys()
            .map(|name| {
                let (_, entries) = self.service_health(name);
                let instances = entries
                    .iter()
                    .map(|e| SnapshotInstance {
                        id: e.instance.id.clone(),
                        node: e.node.name.clone(),
                        address: e.address().to_string(),
                        own_address: !e.instance.address.is_empty() && e.instance.address != e.node.address,
                        port: e.instance.port,
                        tags: e.instance.tags.clone(),
                        meta: e.instance.meta.clone(),
                        health: e.health(),
                        weights: e.instance.weights,
                    })
                    .collect();
                (name.clone(), instances)
            })
            .collect();
        let nodes = self
            .catalog_nodes()
            .into_iter()
            .map(|n| (n.name, SnapshotNode { address: n.address, meta: n.meta }))
            .collect();
        Snapshot { index: index.max(self.catalog_snapshot_index()), services, nodes }
    }
}
