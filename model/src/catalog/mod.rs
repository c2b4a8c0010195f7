//! The service catalog with health: nodes, service instances and their checks, on the same Raft
//! log and index as every other table (Consul's catalog, read from its semantics in
//! `../shared/reference/discovery.md` §2).
//!
//! ```text
//!  task containers ─┐                       ┌─▶ /v1/catalog/*, /v1/health/*, /v1/agent/*
//!  registrator ─────┼─▶ CatalogCommand ─▶ Catalog ─▶ entries(name) ─┼─▶ DNS, routers (one watch)
//!  agent/catalog API┘        (apply.rs)        ▲                    └─▶ shoal catalog …
//!  check results (on change only) ─────────────┘   serfHealth ◀── NodeRecord::status (liveness)
//! ```
//!
//! Invariants:
//! - Instances are keyed by service name, then node name, then service ID (IDs are unique per node,
//!   as in Consul), so a read of one service touches only that service's instances: a watcher on
//!   `/v1/health/service/web` costs O(instances of web), not O(catalog).
//! - Every node of the cluster is a catalog node; its `serfHealth` check is not stored but read from
//!   the node record's status, so the leader's liveness verdict and the check are one write.
//! - An instance's health is the worst of its own checks and its node's checks ([`Health::worst`]).
//! - An orchestrated task's instance is deleted in the same entry that tells the task to shut down
//!   (see `State::apply`), before the agent stops its container, and is refused once the task is
//!   going away, so nothing routes to a task that is leaving.

pub(crate) mod apply;
mod external;
pub mod instances;
pub mod read;
pub mod reap;
pub mod snapshot;
pub mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::VecMap;

/// The catalog's stored strings: IDs, names, addresses, tags and meta up to 24 bytes are kept
/// inline, with no allocation of their own (almost all of them are that short). It serialises as a
/// plain string, so the JSON and the snapshot's bincode are the same as with `String`.
pub type Text = compact_str::CompactString;

/// `strings` as [`Text`]s (tags).
pub fn texts(strings: &[String]) -> Vec<Text> {
    strings.iter().map(|s| Text::from(s.as_str())).collect()
}

/// [`Text`]s as `String`s.
pub fn strings(texts: &[Text]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

pub use apply::{CatalogCommand, CheckUpdate};
pub use instances::Instances;
pub use validate::{validate_check, validate_instance};

/// The one datacenter a Shoal cluster is (Consul clients send `?dc=` and read `Config.Datacenter`).
pub const DATACENTER: &str = "dc1";

/// The ID of the node-level liveness check every cluster node has (Consul's name).
pub const SERF_CHECK_ID: &str = "serfHealth";

/// The ID of a node's maintenance check.
pub const NODE_MAINTENANCE_ID: &str = "_node_maintenance";

/// The prefix of a service's maintenance check ID (`_service_maintenance:<service id>`).
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

/// The most checks one instance may carry, and the most output a check keeps (Consul's 4 KiB).
pub const MAX_CHECKS_PER_INSTANCE: usize = 32;
/// See [`MAX_CHECKS_PER_INSTANCE`].
pub const MAX_OUTPUT_BYTES: usize = 4096;

/// A check's status, ordered from best to worst so that the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Healthy.
    Passing,
    /// Degraded: still answered by DNS (as Consul), left out of `?passing`.
    Warning,
    /// Failing: left out of DNS, routers and `?passing`. A new check starts here, as in Consul.
    #[default]
    Critical,
    /// Taken out on purpose (a maintenance check); stored as `critical` in Consul's JSON.
    Maintenance,
}

impl Health {
    /// Consul's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
            Health::Maintenance => "maintenance",
        }
    }

    /// Parses Consul's spelling of a check status (`maintenance` is not a status one can set).
    pub fn parse_status(s: &str) -> Result<Health, crate::InvalidInput> {
        match s {
            "passing" => Ok(Health::Passing),
            "warning" => Ok(Health::Warning),
            "critical" => Ok(Health::Critical),
            other => Err(crate::InvalidInput(format!(
                "invalid check status {other:?}: use \"passing\", \"warning\" or \"critical\""
            ))),
        }
    }

    /// The worst of `checks` (passing when there are none, as Consul's `AggregatedStatus`).
    pub fn worst(checks: impl IntoIterator<Item = Health>) -> Health {
        checks.into_iter().max().unwrap_or(Health::Passing)
    }
}

/// Where an instance came from: who owns it, and so who may change or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A running task of an orchestrated service (its node's agent registers it from the container).
    Task,
    /// A container Shoal did not start, found by the node's registrator.
    Registrator,
    /// Registered through the node's agent API (`/v1/agent/service/register`): its checks run there.
    Agent,
    /// Registered through `/v1/catalog/register`: nobody runs its checks; their status is as written.
    Catalog,
}

impl Source {
    /// The name shown to people and stored in the instance's meta (`shoal-source`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Task => "task",
            Source::Registrator => "registrator",
            Source::Agent => "agent",
            Source::Catalog => "catalog",
        }
    }

    /// Whether the node's agent runs the checks of instances from this source.
    pub fn agent_owned(self) -> bool {
        !matches!(self, Source::Catalog)
    }
}

/// How a check is probed, and by whom: `Ttl` is pushed by a client, `Docker` comes from the
/// container's own health status, `Manual` (catalog-registered and maintenance checks) is never
/// probed; the others are run by the owning node's agent every interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// HTTP request: 2xx passing, 429 warning, anything else critical.
    Http {
        /// URL.
        url: String,
        /// Method (GET by default).
        method: String,
        /// Extra request headers.
        headers: BTreeMap<String, Vec<String>>,
        /// Accept any certificate (https).
        tls_skip_verify: bool,
    },
    /// TCP connect: passing when it connects.
    Tcp {
        /// `host:port`.
        addr: String,
    },
    /// A command run in the instance's container (`docker exec`): exit 0 passing, 1 warning, else critical.
    Exec {
        /// The command and its arguments.
        args: Vec<String>,
        /// The container; empty: the instance's own.
        container: String,
    },
    /// Updated by clients (`/v1/agent/check/pass|warn|fail|update`); critical when `ttl_ms` passes without one.
    Ttl {
        /// The time to live.
        ttl_ms: u64,
    },
    /// The container's own health status (Docker `HEALTHCHECK`), as the engine reports it.
    Docker {
        /// The container.
        container: String,
    },
    /// Never probed: the status is what was written (catalog registrations, maintenance).
    Manual,
}

impl CheckKind {
    /// Consul's `Type` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Exec { .. } => "script",
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Docker { .. } => "docker",
            CheckKind::Manual => "",
        }
    }

    /// Whether the owning agent probes it on an interval.
    pub fn is_probed(&self) -> bool {
        matches!(self, CheckKind::Http { .. } | CheckKind::Tcp { .. } | CheckKind::Exec { .. })
    }
}

/// A check's definition: what to probe and how results turn into a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    /// How it is probed.
    pub kind: CheckKind,
    /// Time between probes (probed kinds; > 0).
    pub interval_ms: u64,
    /// Time a probe may take.
    pub timeout_ms: u64,
    /// Remove the instance once this check has been critical this long (Consul's
    /// `DeregisterCriticalServiceAfter`, at least one minute).
    pub deregister_after_ms: Option<u64>,
    /// Consecutive successes before a failing check turns passing.
    pub success_before_passing: u32,
    /// Consecutive failures before a passing check turns warning.
    pub failures_before_warning: u32,
    /// Consecutive failures before a passing check turns critical.
    pub failures_before_critical: u32,
}

impl CheckDef {
    /// A check that is never probed.
    pub const fn manual() -> Self {
        CheckDef {
            kind: CheckKind::Manual,
            interval_ms: 0,
            timeout_ms: 0,
            deregister_after_ms: None,
            success_before_passing: 0,
            failures_before_warning: 0,
            failures_before_critical: 0,
        }
    }
}

/// The manual definition, which [`StoredDef`] keeps without an allocation.
static MANUAL: CheckDef = CheckDef::manual();

/// A stored check's definition. A [`CheckDef`] is 128 bytes inline, half of a [`Check`], yet most
/// stored checks have the manual one (every check registered through `/v1/catalog/register`, every
/// maintenance check): that one is kept as nothing at all, the others boxed (8 bytes in the check).
/// It dereferences to the `CheckDef` and serialises as one, so the formats are unchanged.
#[derive(Clone, Default)]
pub struct StoredDef(Option<Box<CheckDef>>);

impl StoredDef {
    /// The manual definition ([`CheckDef::manual`]).
    pub const MANUAL: StoredDef = StoredDef(None);
}

impl std::ops::Deref for StoredDef {
    type Target = CheckDef;
    fn deref(&self) -> &CheckDef {
        self.0.as_deref().unwrap_or(&MANUAL)
    }
}

impl From<CheckDef> for StoredDef {
    fn from(def: CheckDef) -> Self {
        if def == MANUAL { StoredDef(None) } else { StoredDef(Some(Box::new(def))) }
    }
}

impl PartialEq for StoredDef {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for StoredDef {}

impl PartialEq<CheckDef> for StoredDef {
    fn eq(&self, other: &CheckDef) -> bool {
        **self == *other
    }
}

impl std::fmt::Debug for StoredDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Serialize for StoredDef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for StoredDef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CheckDef::deserialize(d).map(StoredDef::from)
    }
}

/// A check as written by a client: the definition and, optionally, its first status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// Unique on its node.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Free text.
    pub notes: String,
    /// What and how.
    pub def: CheckDef,
    /// The status it starts with (Consul: critical).
    pub status: Health,
    /// The output it starts with.
    pub output: String,
}

/// A stored check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Unique on its node.
    pub id: Text,
    /// Name for people.
    pub name: Text,
    /// Free text.
    pub notes: Text,
    /// What and how.
    pub def: StoredDef,
    /// The last status written.
    pub status: Health,
    /// The last probe's output.
    pub output: Text,
    /// Bumped by every TTL update, so the owner restarts the TTL timer even when nothing else changed.
    pub renewals: u64,
    /// Index of the entry that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

impl Check {
    fn new(spec: CheckSpec, index: u64) -> Check {
        Check {
            id: spec.id.into(),
            name: spec.name.into(),
            notes: spec.notes.into(),
            def: spec.def.into(),
            status: spec.status,
            output: truncate_output(spec.output).into(),
            renewals: 0,
            create_index: index,
            modify_index: index,
        }
    }

    /// The status as Consul writes it (maintenance checks are `critical`).
    pub fn consul_status(&self) -> &'static str {
        match self.status {
            Health::Maintenance => "critical",
            s => s.as_str(),
        }
    }
}

/// Cuts a check's output at [`MAX_OUTPUT_BYTES`], on a character boundary, saying so as Consul does.
pub fn truncate_output(mut output: String) -> String {
    if output.len() <= MAX_OUTPUT_BYTES {
        return output;
    }
    let total = output.len();
    let mut cut = MAX_OUTPUT_BYTES;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    output.truncate(cut);
    output.push_str(&format!(" ... (captured {cut} of {total} bytes)"));
    output
}

/// Weights of an instance in DNS SRV answers and weighted balancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// Weight when passing (≥ 1).
    pub passing: u32,
    /// Weight when warning.
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// An instance as written by a client (the agent, the registrator, the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Unique on its node.
    pub id: String,
    /// The service's name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address; empty: the node's.
    pub address: String,
    /// Port (0: none).
    pub port: u16,
    /// Free key/values.
    pub meta: BTreeMap<String, String>,
    /// DNS weights.
    pub weights: Weights,
    /// Consul's `EnableTagOverride` (stored and returned).
    pub enable_tag_override: bool,
    /// The task it is (source `task`).
    pub task_id: Option<String>,
    /// Its container, if it is one.
    pub container_id: Option<String>,
    /// Its checks.
    pub checks: Vec<CheckSpec>,
}

/// A stored instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique on its node.
    pub id: Text,
    /// The service's name.
    pub name: Text,
    /// The node it runs on (its name).
    pub node: Text,
    /// Who registered it.
    pub source: Source,
    /// Tags.
    pub tags: Vec<Text>,
    /// Address; empty: the node's.
    pub address: Text,
    /// Port (0: none).
    pub port: u16,
    /// Free key/values.
    pub meta: VecMap<Text, Text>,
    /// DNS weights.
    pub weights: Weights,
    /// Consul's `EnableTagOverride`.
    pub enable_tag_override: bool,
    /// The task it is (source `task`). A `Box<str>` (16 bytes), not a [`Text`] (24): task and
    /// container IDs are longer than a `Text` keeps inline anyway, and most instances have
    /// neither; the 16 bytes saved bring an `Arc<Instance>` under 256 bytes, an allocator size
    /// class below the next (320).
    pub task_id: Option<Box<str>>,
    /// Its container (a `Box<str>`, as `task_id`).
    pub container_id: Option<Box<str>>,
    /// Its own checks, by ID.
    pub checks: VecMap<Text, Check>,
    /// Index of the entry that created it.
    pub create_index: u64,
    /// Index of its last change, its checks' included.
    pub modify_index: u64,
}

impl Instance {
    /// The worst of its own checks (passing with none).
    pub fn own_health(&self) -> Health {
        Health::worst(self.checks.values().map(|c| c.status))
    }

    /// Whether an instance registered as `spec` from `source` would be this one unchanged, so a
    /// resync that finds nothing new writes nothing and wakes no watcher.
    fn same_as(&self, source: Source, spec: &InstanceSpec) -> bool {
        self.source == source
            && self.name == spec.name
            && self.tags == spec.tags
            && self.address == spec.address
            && self.port == spec.port
            && self.meta == spec.meta
            && self.weights == spec.weights
            && self.enable_tag_override == spec.enable_tag_override
            && self.task_id.as_deref() == spec.task_id.as_deref()
            && self.container_id.as_deref() == spec.container_id.as_deref()
            && self.checks.len() == spec.checks.len()
            && spec.checks.iter().all(|c| {
                self.checks
                    .get(c.id.as_str())
                    .is_some_and(|old| old.name == c.name && old.notes == c.notes && old.def == c.def)
            })
    }
}

/// All instances of one service name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceGroup {
    /// Index of the last change to any instance of this service (removals included).
    pub index: u64,
    /// By node name, then service ID: the order Consul answers in.
    pub instances: Instances,
}

/// A node registered through `/v1/catalog/register` that is not a cluster node (an external service's host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalNode {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Consul's node meta.
    pub meta: BTreeMap<String, String>,
    /// Created at.
    pub create_index: u64,
    /// Last changed at.
    pub modify_index: u64,
}

/// A node's own checks (maintenance, catalog-registered); `serfHealth` is read from the node record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChecks {
    /// Index of the last change.
    pub index: u64,
    /// By check ID.
    pub checks: VecMap<Text, Check>,
}

/// The catalog's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Instances by service name.
    pub services: BTreeMap<String, ServiceGroup>,
    /// Node name → service ID → service name: the per-node view and lookups by ID.
    pub by_node: BTreeMap<String, VecMap<Text, Text>>,
    /// Node-level checks by node name.
    pub node_checks: BTreeMap<String, NodeChecks>,
    /// Nodes that are not cluster nodes.
    pub external_nodes: BTreeMap<String, ExternalNode>,
    /// Index of the last change to any instance or check (the index of `/v1/catalog/services`, and
    /// of a service that does not exist).
    pub services_index: u64,
    /// Index of the last change to the node list (cluster or external nodes, node checks).
    pub nodes_index: u64,
}

impl Catalog {
    /// The instance `id` on `node`.
    pub fn instance(&self, node: &str, id: &str) -> Option<&Instance> {
        let name = self.by_node.get(node)?.get(id)?;
        self.instance_in(name, node, id)
    }

    /// Every instance on `node`, by service ID.
    pub fn node_instances<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        let ids = self.by_node.get(node);
        ids.into_iter().flat_map(move |ids| ids.iter().filter_map(move |(id, name)| self.instance_in(name, node, id)))
    }

    fn instance_in(&self, name: &str, node: &str, id: &str) -> Option<&Instance> {
        self.services.get(name)?.instances.get(node, id).map(|i| &**i)
    }

    /// The check `check_id` of `node`: a node-level check, or one of an instance's.
    pub fn check<'a>(&'a self, node: &'a str, check_id: &str) -> Option<&'a Check> {
        if let Some(c) = self.node_checks.get(node).and_then(|n| n.checks.get(check_id)) {
            return Some(c);
        }
        self.node_instances(node).find_map(|i| i.checks.get(check_id))
    }

    /// Number of instances (for memory figures and `shoal catalog`).
    pub fn instance_count(&self) -> usize {
        self.by_node.values().map(|m| m.len()).sum()
    }
}

#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;
