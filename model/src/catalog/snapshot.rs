//! A compact, serialisable copy of what discovery answers from: every service's instances with
//! their resolved address and aggregated health, and every node's address. DNS servers and routers
//! keep one of these per node (a worker gets it from a manager over the cluster port) and answer
//! from it without a Raft round-trip. It is rebuilt when the catalog's index moves, but only in
//! part: each service's instances are shared (`Arc`) with the previous copy unless that service's
//! index moved, so a change to one service costs one service's rebuild, not the catalog's (the
//! rebuild runs under the state's read lock, which the apply of the next entry waits for).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Health, Text, Weights};
use crate::VecMap;
use crate::state::State;

/// One instance as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInstance {
    /// Service ID (unique on its node).
    pub id: Text,
    /// The node's name.
    pub node: Text,
    /// The address to connect to: the instance's, else its node's.
    pub address: Text,
    /// Whether `address` is the instance's own (not its node's): DNS SRV targets differ.
    pub own_address: bool,
    /// Port (0: none).
    pub port: u16,
    /// Tags.
    pub tags: Vec<Text>,
    /// Meta.
    pub meta: VecMap<Text, Text>,
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
    pub services: BTreeMap<String, Arc<Vec<SnapshotInstance>>>,
    /// Each service's index when its instances were read (what a partial rebuild compares).
    #[serde(default)]
    pub service_indexes: BTreeMap<String, u64>,
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
        self.catalog_snapshot_from(None)
    }

    /// The same, sharing with `prev` every service whose index did not move since it was read.
    pub fn catalog_snapshot_from(&self, prev: Option<&Snapshot>) -> Snapshot {
        // The names alone (not `catalog_services`, which walks every instance's tags).
        let index = self.catalog_snapshot_index();
        let names = self.catalog.services.keys().map(String::as_str).chain([super::read::CONSUL_SERVICE]);
        let mut services = BTreeMap::new();
        let mut service_indexes = BTreeMap::new();
        for name in names {
            let at = self.service_index(name);
            let kept = prev.and_then(|p| {
                (p.service_indexes.get(name) == Some(&at)).then(|| p.services.get(name).cloned()).flatten()
            });
            let instances = kept.unwrap_or_else(|| Arc::new(self.snapshot_instances(name)));
            services.insert(name.to_string(), instances);
            service_indexes.insert(name.to_string(), at);
        }
        let nodes = self
            .catalog_nodes()
            .into_iter()
            .map(|n| (n.name, SnapshotNode { address: n.address, meta: n.meta }))
            .collect();
        Snapshot { index, services, service_indexes, nodes }
    }

    fn snapshot_instances(&self, name: &str) -> Vec<SnapshotInstance> {
        let (_, entries) = self.service_health(name);
        entries
            .iter()
            .map(|e| SnapshotInstance {
                id: e.instance.id.clone(),
                node: e.node.name.clone().into(),
                address: e.address().to_string().into(),
                own_address: !e.instance.address.is_empty() && e.instance.address != e.node.address,
                port: e.instance.port,
                tags: e.instance.tags.clone(),
                meta: e.instance.meta.clone(),
                health: e.health(),
                weights: e.instance.weights,
            })
            .collect()
    }
}
