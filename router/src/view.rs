//! What a template sees: the catalog's instances grouped by service (passing ones by default),
//! every service's labels, the nodes, and the KV entries the templates asked for. Built from one
//! [`EdgeSnapshot`] (the node's answer to `GET /v1/catalog/snapshot`) and the KV reads, so a
//! render is a pure function of a `View` and the template's text.

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_api::edge::EdgeSnapshot;
use shoal_model::catalog::Health;

/// One instance as a template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    /// Its service's name.
    pub service: String,
    /// Its ID (unique on its node).
    pub id: String,
    /// The node it runs on.
    pub node: String,
    /// The address to connect to.
    pub address: String,
    /// The port (0: none).
    pub port: u16,
    /// Tags.
    pub tags: Vec<String>,
    /// Meta.
    pub meta: BTreeMap<String, String>,
    /// `passing`, `warning`, `critical` or `maintenance`.
    pub status: &'static str,
    /// Its Shoal service's labels (empty for instances registered another way).
    pub labels: BTreeMap<String, String>,
    /// Its load-balancing weight (Consul's `Weights`: passing or warning).
    pub weight: u32,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Meta (the node's labels).
    pub meta: BTreeMap<String, String>,
}

/// Everything a render reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The snapshot's index.
    pub index: u64,
    /// Every instance (any health), by service name, in node then ID order.
    pub instances: BTreeMap<String, Vec<InstanceView>>,
    /// Service labels by service name.
    pub labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Nodes, by name.
    pub nodes: Vec<NodeView>,
    /// KV: the keys read so far (`None`: the key does not exist).
    pub kv: BTreeMap<String, Option<String>>,
    /// KV: the prefixes listed so far, each with its (full key, value) pairs in key order.
    pub kv_trees: BTreeMap<String, Vec<(String, String)>>,
    /// The DNS domain (`shoal`): templates route `NAME.<domain>` by default.
    pub domain: String,
}

impl View {
    /// The view of `snap` (KV empty until it is read).
    pub fn from_snapshot(snap: &EdgeSnapshot, domain: &str) -> View {
        let mut instances = BTreeMap::new();
        for (name, list) in &snap.catalog.services {
            let labels = snap.service_labels.get(name).cloned().unwrap_or_default();
            let views: Vec<InstanceView> = list
                .iter()
                .map(|i| InstanceView {
                    service: name.clone(),
                    id: i.id().to_string(),
                    node: i.node().to_string(),
                    address: i.address.to_string(),
                    port: i.port(),
                    tags: i.tags().iter().map(|t| t.to_string()).collect(),
                    meta: i.meta().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    status: i.health.as_str(),
                    labels: labels.clone(),
                    weight: if i.health == Health::Warning { i.weights().warning } else { i.weights().passing },
                })
                .collect();
            instances.insert(name.clone(), views);
        }
        let nodes = snap
            .catalog
            .nodes
            .iter()
            .map(|(name, n)| NodeView { name: name.clone(), address: n.address.clone(), meta: n.meta.clone() })
            .collect();
        View {
            index: snap.index,
            instances,
            labels: snap.service_labels.clone(),
            nodes,
            kv: BTreeMap::new(),
            kv_trees: BTreeMap::new(),
            domain: domain.to_string(),
        }
    }

    /// `name`'s instances: passing ones only when `passing`, with `tag` when given.
    pub fn service(&self, name: &str, tag: Option<&str>, passing: bool) -> Vec<InstanceView> {
        self.instances
            .get(name)
            .map(|list| {
                list.iter()
                    .filter(|i| !passing || i.status == Health::Passing.as_str())
                    .filter(|i| tag.is_none_or(|t| i.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every service name with its passing instances (a service none of whose instances passes is
    /// there with an empty list, so a route to it answers 503 rather than vanishing).
    pub fn passing_services(&self) -> BTreeMap<String, Vec<InstanceView>> {
        self.instances.keys().map(|name| (name.clone(), self.service(name, None, true))).collect()
    }
}
