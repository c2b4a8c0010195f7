//! `shoal-bench placement`: the pure scheduler alone, on simulated nodes (no I/O): place N tasks
//! of a few services with constraints and spread on M nodes, on one core, and report placements/s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use shoal_model::spec::ServiceSpec;
use shoal_model::{Availability, Role};
use shoal_scheduler::{Decision, NodeInfo, Snapshot, TaskToPlace, plan};

/// Results of one run.
pub struct PlacementRun {
    /// Tasks given to the scheduler.
    pub tasks: usize,
    /// Tasks placed.
    pub placed: usize,
    /// Seconds the `plan` call took.
    pub secs: f64,
}

/// `nodes` simulated nodes in 10 zones (labels `zone`, `disk`), a tenth of them managers.
pub fn nodes(n: usize) -> Snapshot {
    let nodes = (0..n)
        .map(|i| NodeInfo {
            id: i as u64 + 1,
            hostname: format!("node{i}"),
            role: if i % 10 == 0 { Role::Manager } else { Role::Worker },
            labels: BTreeMap::from([
                ("zone".to_string(), format!("z{}", i % 10)),
                ("disk".to_string(), if i % 3 == 0 { "hdd" } else { "ssd" }.to_string()),
            ]),
            ready: true,
            availability: Availability::Active,
            nano_cpus: 16_000_000_000,
            memory: 64 << 30,
        })
        .collect();
    Snapshot { nodes, usage: HashMap::new() }
}

/// Places `tasks` tasks split over 10 services: some with constraints (role, label), some with
/// memory and CPU reservations, one (svc9) with a `spread=node.labels.zone` preference.
pub fn run(nodes_n: usize, tasks_n: usize) -> PlacementRun {
    let snapshot = nodes(nodes_n);
    let specs: Vec<Arc<ServiceSpec>> = (0..10)
        .map(|i| {
            let placement = match i % 4 {
                _ if i == 9 => json!({"Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}),
                0 => json!({"Constraints": ["node.role==worker"]}),
                1 => json!({"Constraints": ["node.labels.disk==ssd"]}),
                2 => json!({"Constraints": ["node.labels.zone!=z3"], "MaxReplicas": 1000}),
                _ => json!({}),
            };
            let spec = json!({
                "Name": format!("svc{i}"),
                "TaskTemplate": {
                    "ContainerSpec": {"Image": "shoal:local"},
                    "Placement": placement,
                    "Resources": {"Reservations": {"MemoryBytes": 16u64 << 20, "NanoCPUs": 10_000_000u64}}
                }
            });
            Arc::new(ServiceSpec::parse(&spec).expect("bench spec"))
        })
        .collect();
    let tasks: Vec<TaskToPlace> = (0..tasks_n)
        .map(|t| {
            let s = t % specs.len();
            TaskToPlace { task_id: format!("t{t}"), service_id: format!("svc{s}"), spec: specs[s].clone(), node: None }
        })
        .collect();
    let start = Instant::now();
    let p = plan(&snapshot, &tasks);
    let secs = start.elapsed().as_secs_f64();
    let placed = p.decisions.iter().filter(|(_, d)| matches!(d, Decision::Place(_))).count();
    PlacementRun { tasks: tasks_n, placed, secs }
}
