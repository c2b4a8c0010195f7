//! What the scheduler sees: nodes with their capacity and what is already placed on them. Built
//! by the caller from the registry's state; the scheduler itself never reads anything else.

use std::collections::{BTreeMap, HashMap, HashSet};

use shoal_model::{Availability, NodeId, Role};

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node ID.
    pub id: NodeId,
    /// Its name (`node.hostname`).
    pub hostname: String,
    /// Manager or worker (`node.role`).
    pub role: Role,
    /// Operator labels (`node.labels.K`).
    pub labels: BTreeMap<String, String>,
    /// Recorded ready by the leader.
    pub ready: bool,
    /// active, pause or drain.
    pub availability: Availability,
    /// CPUs, in billionths.
    pub nano_cpus: u64,
    /// Memory, bytes.
    pub memory: u64,
}

/// What is already placed on a node (tasks that are not terminal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// All tasks.
    pub tasks: u64,
    /// Tasks per service ID.
    pub per_service: HashMap<String, u64>,
    /// Reserved CPUs, billionths.
    pub nano_cpus: u64,
    /// Reserved memory, bytes.
    pub memory: u64,
    /// Host-mode published ports in use: (protocol, port).
    pub host_ports: HashSet<(String, u16)>,
}

/// The cluster as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Nodes, in a stable order (ties in spread go to the earlier one).
    pub nodes: Vec<NodeInfo>,
    /// Usage per node (missing: nothing placed).
    pub usage: HashMap<NodeId, NodeUsage>,
}

impl NodeUsage {
    /// Counts one more task of `service_id` (so later tasks of the same plan see it).
    pub fn add(&mut self, service_id: &str, spec: &shoal_model::spec::ServiceSpec) {
        self.tasks += 1;
        *self.per_service.entry(service_id.to_string()).or_default() += 1;
        self.nano_cpus += spec.reserve_nano_cpus;
        self.memory += spec.reserve_memory;
        for p in spec.ports.iter().filter(|p| p.host_mode && p.published != 0) {
            self.host_ports.insert((p.protocol.clone(), p.published));
        }
    }
}

impl Snapshot {
    /// The scheduler's view of the registry: ready/active nodes with their capacity, and what
    /// every live task (desired running, not ended) already takes on its node.
    pub fn from_state(
        nodes: &BTreeMap<NodeId, shoal_model::NodeRecord>,
        tables: &shoal_model::services::ServiceTables,
    ) -> Snapshot {
        use shoal_model::services::TaskState;
        let infos = nodes
            .values()
            .map(|n| NodeInfo {
                id: n.id,
                hostname: n.name.clone(),
                role: n.role,
                labels: n.labels.clone(),
                ready: n.status == shoal_model::NodeStatus::Ready,
                availability: n.availability,
                nano_cpus: u64::from(n.resources.cpus) * 1_000_000_000,
                memory: n.resources.memory_bytes,
            })
            .collect();
        let specs: HashMap<&str, shoal_model::spec::ServiceSpec> = tables
            .services
            .values()
            .filter_map(|s| Some((s.id.as_str(), shoal_model::spec::ServiceSpec::from_text(&s.spec).ok()?)))
            .collect();
        let mut usage: HashMap<NodeId, NodeUsage> = HashMap::new();
        for t in tables.tasks.values() {
            let (Some(node), Some(spec)) = (t.node_id, specs.get(t.service_id.as_str())) else { continue };
            if t.desired <= TaskState::Running && !t.status.state.is_terminal() && t.status.state >= TaskState::Assigned
            {
                usage.entry(node).or_default().add(&t.service_id, spec);
            }
        }
        Snapshot { nodes: infos, usage }
    }
}
