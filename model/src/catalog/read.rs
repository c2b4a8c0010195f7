//! Reads of the catalog that every reader shares (the Consul API, DNS, routers, the CLI): what a
//! node, an instance's checks and a service's health entries are, each with the index a blocking
//! query on it waits past. Cluster nodes come from the node table, with `serfHealth` read from the
//! node's status, and managers form the built-in `consul` service, as in Consul.

use std::collections::{BTreeMap, BTreeSet};

use super::{Check, Health, Instance, SERF_CHECK_ID, Source, StoredDef, Text, Weights};
use crate::node::{NodeRecord, NodeStatus, Role};
use crate::state::State;

/// The name of the built-in service listing the managers.
pub const CONSUL_SERVICE: &str = "consul";

/// A catalog node as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// A UUID (Consul's `ID`): the cluster node ID, or derived from the name for external nodes.
    pub id: String,
    /// Name.
    pub name: String,
    /// Address (IP).
    pub address: String,
    /// Node meta (a cluster node's labels).
    pub meta: BTreeMap<String, String>,
    /// Whether it is a cluster node (else registered through the catalog API).
    pub cluster: bool,
    /// Created at.
    pub create_index: u64,
    /// Last changed at.
    pub modify_index: u64,
}

/// A check with the names of what it belongs to, as `/v1/health/*` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckView {
    /// The node's name.
    pub node: Text,
    /// The check.
    pub check: Check,
    /// Its instance's ID (`""`: a node-level check).
    pub service_id: Text,
    /// Its instance's service name.
    pub service_name: Text,
    /// Its instance's tags.
    pub service_tags: Vec<Text>,
}

/// One instance with its node and every check that decides its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEntry {
    /// Its node.
    pub node: NodeView,
    /// The instance.
    pub instance: Instance,
    /// The node's checks, then its own.
    pub checks: Vec<CheckView>,
}

impl HealthEntry {
    /// The worst of its checks (Consul's `AggregatedStatus`).
    pub fn health(&self) -> Health {
        Health::worst(self.checks.iter().map(|c| c.check.status))
    }

    /// The address clients connect to: the instance's, else its node's.
    pub fn address(&self) -> &str {
        if self.instance.address.is_empty() { &self.node.address } else { &self.instance.address }
    }
}

/// The IP of a `host:port` address (brackets of IPv6 removed).
pub fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

/// A cluster node ID as a UUID, as Consul's `NodeID` fields are.
pub fn node_uuid(id: u64) -> String {
    format!("00000000-0000-0000-{:04x}-{:012x}", id >> 48, id & 0xffff_ffff_ffff)
}

fn name_uuid(name: &str) -> String {
    // FNV-1a: stable across builds and replicas (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{:08x}-{:04x}-4{:03x}-8000-{:012x}", h >> 32, (h >> 16) & 0xffff, h & 0xfff, h & 0xffff_ffff_ffff)
}

impl State {
    fn cluster_node_named(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.values().find(|n| n.name == name)
    }

    fn cluster_view(n: &NodeRecord) -> NodeView {
        NodeView {
            id: node_uuid(n.id),
            name: n.name.clone(),
            address: host_of(&n.cluster_addr),
            meta: n.labels.clone(),
            cluster: true,
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }

    /// Every catalog node, by name.
    pub fn catalog_nodes(&self) -> Vec<NodeView> {
        let mut out: BTreeMap<String, NodeView> =
            self.nodes.values().map(|n| (n.name.clone(), Self::cluster_view(n))).collect();
        for e in self.catalog.external_nodes.values() {
            out.entry(e.name.clone()).or_insert_with(|| NodeView {
                id: name_uuid(&e.name),
                name: e.name.clone(),
                address: e.address.clone(),
                meta: e.meta.clone(),
                cluster: false,
                create_index: e.create_index,
                modify_index: e.modify_index,
            });
        }
        out.into_values().collect()
    }

    /// One catalog node.
    pub fn catalog_node(&self, name: &str) -> Option<NodeView> {
        if let Some(n) = self.cluster_node_named(name) {
            return Some(Self::cluster_view(n));
        }
        self.catalog.external_nodes.get(name).map(|e| NodeView {
            id: name_uuid(&e.name),
            name: e.name.clone(),
            address: e.address.clone(),
            meta: e.meta.clone(),
            cluster: false,
            create_index: e.create_index,
            modify_index: e.modify_index,
        })
    }

    /// The index of the node list: any node written, removed or its checks changed.
    pub fn catalog_nodes_index(&self) -> u64 {
        let nodes = self.nodes.values().map(|n| n.modify_index).max().unwrap_or(0);
        nodes.max(self.catalog.nodes_index)
    }

    /// The liveness check of a cluster node, read from its status.
    pub fn serf_check(n: &NodeRecord) -> Check {
        let (status, output) = match n.status {
            // A record not yet judged was written by the node itself, so it was alive then.
            NodeStatus::Ready | NodeStatus::Unknown => (Health::Passing, "Agent alive and reachable"),
            NodeStatus::Down => (Health::Critical, "Agent not live or unreachable"),
        };
        Check {
            id: SERF_CHECK_ID.into(),
            name: "Serf Health Status".into(),
            notes: String::new().into(),
            def: StoredDef::MANUAL,
            status,
            output: output.into(),
            renewals: 0,
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }

    /// A node's own checks: `serfHealth` for a cluster node, then maintenance and catalog-registered ones.
    pub fn node_level_checks(&self, node: &str) -> Vec<CheckView> {
        let view = |check: Check| CheckView {
            node: node.into(),
            check,
            service_id: Text::default(),
            service_name: Text::default(),
            service_tags: Vec::new(),
        };
        let mut out: Vec<CheckView> =
            self.cluster_node_named(node).map(|n| view(Self::serf_check(n))).into_iter().collect();
        if let Some(n) = self.catalog.node_checks.get(node) {
            for c in n.checks.values() {
                let mut v = view(c.clone());
                // A service's maintenance check belongs to that service, as in Consul.
                if let Some(sid) = c.id.strip_prefix(super::SERVICE_MAINTENANCE_PREFIX)
                    && let Some(i) = self.catalog.instance(node, sid)
                {
                    v.service_id = i.id.clone();
                    v.service_name = i.name.clone();
                    v.service_tags = i.tags.clone();
                }
                out.push(v);
            }
        }
        out
    }

    fn instance_checks(i: &Instance) -> impl Iterator<Item = CheckView> + '_ {
        i.checks.values().map(move |c| CheckView {
            node: i.node.clone(),
            check: c.clone(),
            service_id: i.id.clone(),
            service_name: i.name.clone(),
            service_tags: i.tags.clone(),
        })
    }

    /// The checks that decide `i`'s health: its node's (the maintenance checks of other instances
    /// on the node left out), then its own.
    fn entry(&self, node: &NodeView, i: &Instance, node_checks: &[CheckView]) -> HealthEntry {
        let mut checks: Vec<CheckView> = Self::node_checks_of(i, node_checks).cloned().collect();
        checks.extend(Self::instance_checks(i));
        HealthEntry { node: node.clone(), instance: i.clone(), checks }
    }

    /// Of its node's checks, those that decide `i`'s health (not other instances' maintenance).
    fn node_checks_of<'a>(i: &'a Instance, node_checks: &'a [CheckView]) -> impl Iterator<Item = &'a CheckView> {
        node_checks.iter().filter(|c| c.service_id.is_empty() || c.service_id == i.id)
    }

    /// What [`HealthEntry::health`] of `i`'s entry is, without building the entry.
    pub(crate) fn instance_health(i: &Instance, node_checks: &[CheckView]) -> Health {
        let node = Self::node_checks_of(i, node_checks).map(|c| c.check.status);
        Health::worst(node.chain(i.checks.values().map(|c| c.status)))
    }

    /// The instances of the built-in `consul` service: one per manager, on its cluster port.
    fn consul_entries(&self) -> Vec<HealthEntry> {
        let mut managers: Vec<&NodeRecord> = self.nodes.values().filter(|n| n.role == Role::Manager).collect();
        managers.sort_by(|a, b| a.name.cmp(&b.name));
        managers
            .into_iter()
            .map(|n| {
                let view = Self::cluster_view(n);
                let port = n.cluster_addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0);
                let inst = Instance {
                    id: CONSUL_SERVICE.into(),
                    name: CONSUL_SERVICE.into(),
                    node: n.name.clone().into(),
                    source: Source::Agent,
                    tags: Vec::new(),
                    address: Text::default(),
                    port,
                    meta: Default::default(),
                    weights: Weights::default(),
                    enable_tag_override: false,
                    task_id: None,
                    container_id: None,
                    checks: Default::default(),
                    create_index: n.create_index,
                    modify_index: n.modify_index,
                };
                let node_checks = self.node_level_checks(&n.name);
                self.entry(&view, &inst, &node_checks)
            })
            .collect()
    }

    /// The index a blocking query on service `name` waits past: any change to its instances or to
    /// the nodes they run on.
    pub fn service_index(&self, name: &str) -> u64 {
        if name == CONSUL_SERVICE {
            return self.catalog_nodes_index();
        }
        let Some(g) = self.catalog.services.get(name) else { return self.catalog.services_index };
        let mut index = g.index;
        for node in g.instances.nodes() {
            if let Some(n) = self.cluster_node_named(node) {
                index = index.max(n.modify_index);
            }
            if let Some(c) = self.catalog.node_checks.get(node.as_str()) {
                index = index.max(c.index);
            }
        }
        index
    }

    /// Every instance of service `name` with its node and checks, by node then ID, and the index.
    pub fn service_health(&self, name: &str) -> (u64, Vec<HealthEntry>) {
        let index = self.service_index(name);
        if name == CONSUL_SERVICE {
            return (index, self.consul_entries());
        }
        let Some(g) = self.catalog.services.get(name) else { return (index, Vec::new()) };
        let mut out = Vec::new();
        for (node, instances) in g.instances.by_node() {
            let Some(view) = self.catalog_node(node) else { continue };
            let node_checks = self.node_level_checks(node);
            out.extend(instances.iter().map(|i| self.entry(&view, i, &node_checks)));
        }
        (index, out)
    }

    /// Every service name with the union of its instances' tags, and the index of that list.
    pub fn catalog_services(&self) -> (u64, BTreeMap<String, BTreeSet<String>>) {
        let mut out: BTreeMap<String, BTreeSet<String>> = self
            .catalog
            .services
            .iter()
            .map(|(name, g)| {
                (name.clone(), g.instances.iter().flat_map(|i| i.tags.iter().map(|t| t.to_string())).collect())
            })
            .collect();
        out.insert(CONSUL_SERVICE.into(), BTreeSet::new());
        (self.catalog.services_index.max(self.catalog_nodes_index()), out)
    }

    /// The index of every check in the cluster (`/v1/health/state/*`).
    pub fn checks_index(&self) -> u64 {
        self.catalog.services_index.max(self.catalog_nodes_index())
    }

    /// Every check of the cluster (node-level first per node), by node name.
    pub fn all_checks(&self) -> Vec<CheckView> {
        let mut out = Vec::new();
        for node in self.catalog_nodes() {
            out.extend(self.node_level_checks(&node.name));
            for i in self.catalog.node_instances(&node.name) {
                out.extend(Self::instance_checks(i));
            }
        }
        out
    }

    /// The checks of one node (its own, then its instances').
    pub fn node_checks(&self, node: &str) -> Vec<CheckView> {
        let mut out = self.node_level_checks(node);
        for i in self.catalog.node_instances(node) {
            out.extend(Self::instance_checks(i));
        }
        out
    }

    /// The instances on one node (the built-in `consul` instance included on a manager).
    pub fn node_services(&self, node: &str) -> Vec<Instance> {
        let mut out: Vec<Instance> = self.catalog.node_instances(node).cloned().collect();
        if self.cluster_node_named(node).is_some_and(|n| n.role == Role::Manager)
            && let Some(e) = self.consul_entries().into_iter().find(|e| e.node.name == node)
        {
            out.push(e.instance);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The checks of one service's instances (`/v1/health/checks/<service>`).
    pub fn service_checks(&self, name: &str) -> Vec<CheckView> {
        let mut out = Vec::new();
        if let Some(g) = self.catalog.services.get(name) {
            for i in &g.instances {
                out.extend(Self::instance_checks(i));
            }
        }
        out
    }
}
