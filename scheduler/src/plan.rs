//! The scheduler: a pure function from a snapshot and the tasks to place to a plan. No I/O, no
//! clock, no randomness: the same input always gives the same plan (ties go to the node listed first).
//!
//! For each service in the batch: the filters that do not depend on usage (availability,
//! constraints) pick the eligible nodes once; then each task goes to the eligible node with the
//! fewest tasks of this service, then the fewest tasks overall, among those that pass the usage
//! filters (resources, host ports, max per node). A min-heap keeps that O(log n) per task. With
//! `spread=node.labels.K` preferences the label groups with the fewest tasks of the service come
//! first (a linear scan; preferences are rare).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use shoal_model::NodeId;
use shoal_model::spec::ServiceSpec;

use crate::filter::{Filter, Pipeline, Refusals};
use crate::snapshot::{NodeUsage, Snapshot};

/// A task waiting for a node.
#[derive(Debug, Clone)]
pub struct TaskToPlace {
    /// Task ID.
    pub task_id: String,
    /// Its service.
    pub service_id: String,
    /// The service's spec (shared by all its tasks).
    pub spec: Arc<ServiceSpec>,
    /// Global tasks are made for one node: only that node is checked.
    pub node: Option<NodeId>,
}

/// What happens to one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Assign it to this node.
    Place(NodeId),
    /// It stays pending, for this reason.
    Pending(String),
}

/// The scheduler's answer, in the order of the tasks given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One decision per task.
    pub decisions: Vec<(String, Decision)>,
}

impl Plan {
    /// How many tasks were placed.
    pub fn placed(&self) -> usize {
        self.decisions.iter().filter(|(_, d)| matches!(d, Decision::Place(_))).count()
    }
}

/// Places `tasks` on the nodes of `snapshot`.
pub fn plan(snapshot: &Snapshot, tasks: &[TaskToPlace]) -> Plan {
    let pipeline = Pipeline::default();
    let mut usage = snapshot.usage.clone();
    let mut out: HashMap<&str, Decision> = HashMap::with_capacity(tasks.len());
    // Group by service, keeping the order in which services first appear.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&TaskToPlace>> = HashMap::new();
    for t in tasks {
        groups
            .entry(t.service_id.as_str())
            .or_insert_with(|| {
                order.push(t.service_id.as_str());
                Vec::new()
            })
            .push(t);
    }
    for service in order {
        let group = &groups[service];
        let spec = group[0].spec.clone();
        let filters = pipeline.applicable(&spec);
        let (fixed, varying): (Vec<_>, Vec<_>) = filters.iter().copied().partition(|(_, f)| !f.depends_on_usage());
        let (pinned, free): (Vec<&TaskToPlace>, Vec<&TaskToPlace>) = group.iter().partition(|t| t.node.is_some());
        for t in pinned {
            let node = t.node.expect("pinned");
            let mut refusals = Refusals::default();
            let decision = match snapshot.nodes.iter().find(|n| n.id == node) {
                None => Decision::Pending(format!("node {node:016x} is no longer in the cluster")),
                Some(n) => {
                    let u = usage.get(&node).cloned().unwrap_or_default();
                    if Pipeline::check(&filters, &spec, service, n, &u, &mut refusals) {
                        add(&mut usage, node, service, &spec);
                        Decision::Place(node)
                    } else {
                        Decision::Pending(pipeline.explain(&refusals))
                    }
                }
            };
            out.insert(t.task_id.as_str(), decision);
        }
        if free.is_empty() {
            continue;
        }
        // The usage-independent filters, once per service.
        let mut refusals = Refusals::default();
        let empty = NodeUsage::default();
        let eligible: Vec<usize> = (0..snapshot.nodes.len())
            .filter(|&i| {
                let n = &snapshot.nodes[i];
                Pipeline::check(&fixed, &spec, service, n, usage.get(&n.id).unwrap_or(&empty), &mut refusals)
            })
            .collect();
        let decisions = if spec.spread_over.is_empty() {
            place_spread(snapshot, &mut usage, &spec, service, &eligible, &varying, &pipeline, refusals, free.len())
        } else {
            place_preferences(
                snapshot,
                &mut usage,
                &spec,
                service,
                &eligible,
                &varying,
                &pipeline,
                refusals,
                free.len(),
            )
        };
        for (t, d) in free.iter().zip(decisions) {
            out.insert(t.task_id.as_str(), d);
        }
    }
    Plan {
        decisions: tasks
            .iter()
            .map(|t| (t.task_id.clone(), out.remove(t.task_id.as_str()).expect("decided")))
            .collect(),
    }
}

fn add(usage: &mut HashMap<NodeId, NodeUsage>, node: NodeId, service: &str, spec: &ServiceSpec) {
    usage.entry(node).or_default().add(service, spec);
}

fn counts(usage: &HashMap<NodeId, NodeUsage>, node: NodeId, service: &str) -> (u64, u64) {
    usage.get(&node).map_or((0, 0), |u| (u.per_service.get(service).copied().unwrap_or(0), u.tasks))
}

#[allow(clippy::too_many_arguments)]
fn place_spread(
    snapshot: &Snapshot,
    usage: &mut HashMap<NodeId, NodeUsage>,
    spec: &ServiceSpec,
    service: &str,
    eligible: &[usize],
    varying: &[(usize, &'static dyn Filter)],
    pipeline: &Pipeline,
    mut refusals: Refusals,
    n: usize,
) -> Vec<Decision> {
    // Min-heap on (tasks of this service, tasks overall, node position).
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = eligible
        .iter()
        .map(|&i| {
            let (svc, total) = counts(usage, snapshot.nodes[i].id, service);
            Reverse((svc, total, i))
        })
        .collect();
    let empty = NodeUsage::default();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut decision = None;
        while let Some(Reverse((_, _, i))) = heap.pop() {
            let node = &snapshot.nodes[i];
            // Usage only grows within a batch: a node refused now stays refused for this service.
            if !Pipeline::check(varying, spec, service, node, usage.get(&node.id).unwrap_or(&empty), &mut refusals) {
                continue;
            }
            add(usage, node.id, service, spec);
            let (svc, total) = counts(usage, node.id, service);
            heap.push(Reverse((svc, total, i)));
            decision = Some(Decision::Place(node.id));
            break;
        }
        out.push(decision.unwrap_or_else(|| Decision::Pending(pipeline.explain(&refusals))));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn place_preferences(
    snapshot: &Snapshot,
    usage: &mut HashMap<NodeId, NodeUsage>,
    spec: &ServiceSpec,
    service: &str,
    eligible: &[usize],
    varying: &[(usize, &'static dyn Filter)],
    pipeline: &Pipeline,
    mut refusals: Refusals,
    n: usize,
) -> Vec<Decision> {
    // Per preference level, a group ID for each eligible node (by its label value) and the tasks
    // of this service in each group; kept up to date as tasks are placed.
    let levels = spec.spread_over.len();
    let mut group_of: Vec<Vec<usize>> = vec![Vec::with_capacity(levels); eligible.len()];
    let mut in_group: Vec<Vec<u64>> = Vec::with_capacity(levels);
    let mut svc: Vec<u64> = Vec::with_capacity(eligible.len());
    let mut total: Vec<u64> = Vec::with_capacity(eligible.len());
    for &i in eligible {
        let (s, t) = counts(usage, snapshot.nodes[i].id, service);
        svc.push(s);
        total.push(t);
    }
    for key in &spec.spread_over {
        let mut ids: HashMap<Option<&str>, usize> = HashMap::new();
        let mut counts_here: Vec<u64> = Vec::new();
        for (k, &i) in eligible.iter().enumerate() {
            let value = snapshot.nodes[i].labels.get(key).map(String::as_str);
            let next = ids.len();
            let g = *ids.entry(value).or_insert(next);
            if g == counts_here.len() {
                counts_here.push(0);
            }
            counts_here[g] += svc[k];
            group_of[k].push(g);
        }
        in_group.push(counts_here);
    }
    let key_cmp = |a: usize, b: usize, in_group: &[Vec<u64>], svc: &[u64], total: &[u64]| {
        for (level, groups) in in_group.iter().enumerate() {
            let o = groups[group_of[a][level]].cmp(&groups[group_of[b][level]]);
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        (svc[a], total[a], a).cmp(&(svc[b], total[b], b))
    };
    // Usage only grows within a batch: a node refused once stays refused for this service.
    let mut refused = vec![false; eligible.len()];
    let empty = NodeUsage::default();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let decision = loop {
            let best =
                (0..eligible.len()).filter(|&k| !refused[k]).min_by(|&a, &b| key_cmp(a, b, &in_group, &svc, &total));
            let Some(k) = best else { break Decision::Pending(pipeline.explain(&refusals)) };
            let node = &snapshot.nodes[eligible[k]];
            if !Pipeline::check(varying, spec, service, node, usage.get(&node.id).unwrap_or(&empty), &mut refusals) {
                refused[k] = true;
                continue;
            }
            add(usage, node.id, service, spec);
            svc[k] += 1;
            total[k] += 1;
            for level in 0..levels {
                in_group[level][group_of[k][level]] += 1;
            }
            break Decision::Place(node.id);
        };
        out.push(decision);
    }
    out
}
