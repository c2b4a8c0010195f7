//! A compact, serialisable copy of what discovery answers from: every service's instances with
//! their resolved address and aggregated health, and every node's address. DNS servers and routers
//! keep one of these per node (a worker gets it from a manager over the cluster port) and answer
//! from it without a Raft round-trip. It is rebuilt when the catalog's index moves, but only in
//! part: each service's instances are shared (`Arc`) with the previous copy unless that service's
//! index moved, so a change to one service costs one service's rebuild, not the catalog's (the
//! rebuild runs under the state's read lock, which the apply of the next entry waits for).
//!
//! On a manager, each [`SnapshotInstance`] shares the catalog's own record of the instance
//! (`Arc<Instance>`, see [`super::instances`]) and adds only what it resolves (the address to
//! connect to, the health): ~40 bytes an instance instead of a ~270-byte copy of its ID, node,
//! address, tags and meta. It serialises with the same fields as before, so managers and workers of
//! either layout read each other's snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::read::CONSUL_SERVICE;
use super::{Health, Instance, Source, Text, Weights};
use crate::VecMap;
use crate::state::State;

/// One instance as discovery sees it.
#[derive(Clone)]
pub struct SnapshotInstance {
    /// The catalog's record (on a manager, the tables' own; read from it: ID, node, port, tags,
    /// meta, weights; its checks and indexes are not part of the snapshot).
    instance: Arc<Instance>,
    /// The address to connect to: the instance's, else its node's.
    pub address: Text,
    /// Whether `address` is the instance's own (not its node's): DNS SRV targets differ.
    pub own_address: bool,
    /// The worst of its checks and its node's.
    pub health: Health,
}

impl SnapshotInstance {
    /// An instance read elsewhere than from a catalog (a worker's copy, tests, benchmarks).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: Text,
        node: Text,
        address: Text,
        own_address: bool,
        port: u16,
        tags: Vec<Text>,
        meta: VecMap<Text, Text>,
        health: Health,
        weights: Weights,
    ) -> Self {
        let instance = Instance {
            id,
            name: Text::default(),
            node,
            source: Source::Catalog,
            tags,
            address: Text::default(),
            port,
            meta,
            weights,
            enable_tag_override: false,
            task_id: None,
            container_id: None,
            checks: VecMap::new(),
            create_index: 0,
            modify_index: 0,
        };
        SnapshotInstance { instance: Arc::new(instance), address, own_address, health }
    }

    /// `instance` as discovery sees it, sharing the record.
    pub fn shared(instance: Arc<Instance>, address: Text, own_address: bool, health: Health) -> Self {
        SnapshotInstance { instance, address, own_address, health }
    }

    /// Service ID (unique on its node).
    pub fn id(&self) -> &Text {
        &self.instance.id
    }

    /// The node's name.
    pub fn node(&self) -> &Text {
        &self.instance.node
    }

    /// Port (0: none).
    pub fn port(&self) -> u16 {
        self.instance.port
    }

    /// Tags.
    pub fn tags(&self) -> &[Text] {
        &self.instance.tags
    }

    /// Meta.
    pub fn meta(&self) -> &VecMap<Text, Text> {
        &self.instance.meta
    }

    /// DNS weights.
    pub fn weights(&self) -> Weights {
        self.instance.weights
    }

    fn wire(&self) -> WireRef<'_> {
        WireRef {
            id: self.id(),
            node: self.node(),
            address: &self.address,
            own_address: self.own_address,
            port: self.port(),
            tags: self.tags(),
            meta: self.meta(),
            health: self.health,
            weights: self.weights(),
        }
    }
}

/// Equal when discovery would answer the same from them (what the snapshot holds).
impl PartialEq for SnapshotInstance {
    fn eq(&self, other: &Self) -> bool {
        self.wire() == other.wire()
    }
}

impl Eq for SnapshotInstance {}

impl std::fmt::Debug for SnapshotInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.wire().fmt(f)
    }
}

/// The serialised form (the fields, in the order, of the struct this was before it shared the record).
#[derive(Debug, PartialEq, Serialize)]
#[serde(rename = "SnapshotInstance")]
struct WireRef<'a> {
    id: &'a Text,
    node: &'a Text,
    address: &'a Text,
    own_address: bool,
    port: u16,
    tags: &'a [Text],
    meta: &'a VecMap<Text, Text>,
    health: Health,
    weights: Weights,
}

#[derive(Deserialize)]
#[serde(rename = "SnapshotInstance")]
struct Wire {
    id: Text,
    node: Text,
    address: Text,
    own_address: bool,
    port: u16,
    tags: Vec<Text>,
    meta: VecMap<Text, Text>,
    health: Health,
    weights: Weights,
}

impl Serialize for SnapshotInstance {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SnapshotInstance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        Ok(SnapshotInstance::new(w.id, w.node, w.address, w.own_address, w.port, w.tags, w.meta, w.health, w.weights))
    }
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
        let names = self.catalog.services.keys().map(String::as_str).chain([CONSUL_SERVICE]);
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
        let resolved = |i: Arc<Instance>, node_address: &str, health: Health| {
            let own_address = !i.address.is_empty() && i.address != node_address;
            let address = if i.address.is_empty() { Text::from(node_address) } else { i.address.clone() };
            SnapshotInstance::shared(i, address, own_address, health)
        };
        if name == CONSUL_SERVICE {
            // Made up from the node table, not stored: nothing to share.
            let (_, entries) = self.service_health(name);
            return entries
                .into_iter()
                .map(|e| {
                    let health = e.health();
                    resolved(Arc::new(e.instance), &e.node.address, health)
                })
                .collect();
        }
        let Some(g) = self.catalog.services.get(name) else { return Vec::new() };
        let mut out = Vec::with_capacity(g.instances.len());
        // The same instances, order and health as `service_health`, without copying the records.
        for (node, run) in g.instances.by_node() {
            let Some(view) = self.catalog_node(node) else { continue };
            let node_checks = self.node_level_checks(node);
            for i in run {
                let health = Self::instance_health(i, &node_checks);
                out.push(resolved(i.clone(), &view.address, health));
            }
        }
        out
    }
}
