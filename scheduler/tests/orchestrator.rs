//! The orchestrator and the scheduler together on simulated nodes: the real state machine
//! (`ServiceTables::apply`, `State` rules) holds the tables; a fake "runtime" makes every assigned
//! task run on its node (or fail, when told to). No I/O, no clock: time is a number the test moves.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shoal_model::CommandResult;
use shoal_model::services::{ServiceCommand, ServiceTables, TaskState, TaskStatus, rfc3339};
use shoal_model::{Availability, NodeId, NodeRecord, NodeStatus, Resources, Role};
use shoal_scheduler::orchestrator::{IdSource, reconcile};
use shoal_scheduler::{Decision, Snapshot, plan};

struct Counter(u64);
impl IdSource for Counter {
    fn next_id(&mut self) -> String {
        self.0 += 1;
        format!("t{:04}", self.0)
    }
}

struct Sim {
    tables: ServiceTables,
    nodes: BTreeMap<NodeId, NodeRecord>,
    index: u64,
    now: u64,
    ids: Counter,
    /// Services whose tasks fail as soon as they run.
    failing: Vec<String>,
}

impl Sim {
    fn new(n: u64) -> Sim {
        let nodes = (1..=n)
            .map(|id| {
                (
                    id,
                    NodeRecord {
                        id,
                        name: format!("node{id}"),
                        cluster_addr: String::new(),
                        http_addr: String::new(),
                        role: if id == 1 { Role::Manager } else { Role::Worker },
                        availability: Availability::Active,
                        labels: BTreeMap::new(),
                        resources: Resources { cpus: 2, memory_bytes: 1 << 30, engine_version: String::new() },
                        status: NodeStatus::Ready,
                        create_index: 1,
                        modify_index: 1,
                    },
                )
            })
            .collect();
        Sim { tables: ServiceTables::default(), nodes, index: 10, now: 1_000_000, ids: Counter(0), failing: Vec::new() }
    }

    fn apply(&mut self, cmd: ServiceCommand) -> CommandResult {
        self.index += 1;
        self.tables.apply(self.index, &cmd)
    }

    fn create(&mut self, spec: Value) -> String {
        let id = format!("s{}", self.tables.services.len() + 1);
        let name = spec["Name"].as_str().unwrap().to_string();
        let r =
            self.apply(ServiceCommand::Create { id: id.clone(), name, spec: spec.to_string(), at: rfc3339(self.now) });
        assert_eq!(r, CommandResult::Done);
        id
    }

    fn update(&mut self, id: &str, f: impl FnOnce(&mut Value)) {
        let s = &self.tables.services[id];
        let mut spec: Value = serde_json::from_str(&s.spec).unwrap();
        f(&mut spec);
        let cmd = ServiceCommand::Update {
            id: id.into(),
            version: s.modify_index,
            name: s.name.clone(),
            spec: spec.to_string(),
            at: rfc3339(self.now),
            rollback: false,
        };
        assert_eq!(self.apply(cmd), CommandResult::Done);
    }

    /// One leader tick: reconcile, write, plan, assign; then every node runs what it was given.
    fn tick(&mut self) {
        let snapshot_nodes = Snapshot::from_state(&self.nodes, &self.tables).nodes;
        let r = reconcile(&self.tables, &snapshot_nodes, self.now, &mut self.ids);
        for c in r.commands {
            let res = self.apply(c.clone());
            assert!(!matches!(res, CommandResult::Refused(_)), "{c:?} refused: {res:?}");
        }
        let snapshot = Snapshot::from_state(&self.nodes, &self.tables);
        for (id, d) in plan(&snapshot, &r.to_place).decisions {
            let (node_id, message) = match d {
                Decision::Place(n) => (Some(n), "assigned".to_string()),
                Decision::Pending(why) => (None, why),
            };
            self.apply(ServiceCommand::Assign { id, node_id, message, at: rfc3339(self.now) });
        }
        // The nodes: run what is assigned and desired running; stop what is desired shut down.
        let ups: Vec<(String, NodeId, TaskState)> = self
            .tables
            .tasks
            .values()
            .filter_map(|t| {
                let node = t.node_id?;
                let up = self.nodes[&node].status == NodeStatus::Ready;
                let image = self.image_of(t);
                let next = if t.desired <= TaskState::Running && t.status.state == TaskState::Assigned {
                    if self.failing.contains(&t.service_id) || image.starts_with("fail") {
                        TaskState::Failed
                    } else {
                        TaskState::Running
                    }
                } else if t.desired > TaskState::Running
                    && !t.status.state.is_terminal()
                    && up
                    && t.status.state >= TaskState::Assigned
                {
                    TaskState::Shutdown
                } else {
                    return None;
                };
                up.then_some((t.id.clone(), node, next))
            })
            .collect();
        for (id, node, state) in ups {
            let status = TaskStatus {
                state,
                timestamp: rfc3339(self.now),
                message: state.as_str().into(),
                err: (state == TaskState::Failed).then(|| "exit 1".into()),
                container_id: None,
                exit_code: None,
            };
            self.apply(ServiceCommand::SetStatus { id, node_id: node, status });
        }
        self.now += 100;
    }

    /// The image of the spec version a task was made from.
    fn image_of(&self, t: &shoal_model::services::TaskRecord) -> String {
        let spec = self.tables.services.get(&t.service_id).and_then(|s| s.spec_history.get(&t.spec_version));
        let v: Value = spec.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        v["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string()
    }

    /// Live tasks (desired running, not ended) per image.
    fn live_images(&self, id: &str) -> BTreeMap<String, usize> {
        let mut per = BTreeMap::new();
        for t in self
            .tables
            .tasks
            .values()
            .filter(|t| t.service_id == id && t.desired == TaskState::Running && !t.status.state.is_terminal())
        {
            *per.entry(self.image_of(t)).or_default() += 1;
        }
        per
    }

    fn settle(&mut self) {
        for _ in 0..20 {
            self.tick();
        }
    }

    /// Running tasks per node (nodes 1..=n), for service `id`.
    fn running(&self, id: &str) -> Vec<usize> {
        let mut per = vec![0; self.nodes.len()];
        for t in
            self.tables.tasks.values().filter(|t| {
                t.service_id == id && t.status.state == TaskState::Running && t.desired == TaskState::Running
            })
        {
            per[(t.node_id.unwrap() - 1) as usize] += 1;
        }
        per
    }

    fn live_slots(&self, id: &str) -> Vec<u64> {
        let mut slots: Vec<u64> = self
            .tables
            .tasks
            .values()
            .filter(|t| t.service_id == id && t.desired == TaskState::Running && !t.status.state.is_terminal())
            .map(|t| t.slot)
            .collect();
        slots.sort();
        slots
    }
}

fn web(replicas: u64) -> Value {
    json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "shoal:local"}}, "Mode": {"Replicated": {"Replicas": replicas}}})
}

fn scale(sim: &mut Sim, id: &str, n: u64) {
    sim.update(id, |s| s["Mode"]["Replicated"]["Replicas"] = json!(n));
    sim.settle();
}

#[test]
fn create_scale_and_scale_down() {
    let mut sim = Sim::new(3);
    let web = sim.create(web(5));
    sim.settle();
    assert_eq!(sim.running(&web), vec![2, 2, 1], "5 replicas on 3 nodes");
    scale(&mut sim, &web, 10);
    assert_eq!(sim.running(&web).iter().sum::<usize>(), 10);
    scale(&mut sim, &web, 30);
    assert_eq!(sim.running(&web), vec![10, 10, 10], "even spread, as Swarm tutorials show");
    scale(&mut sim, &web, 4);
    assert_eq!(sim.live_slots(&web), vec![1, 2, 3, 4], "scale-down removes the highest slots");
    // Removed tasks are reaped once they have stopped.
    assert!(sim.tables.tasks.values().all(|t| t.slot <= 4), "{} tasks left", sim.tables.tasks.len());
}

#[test]
fn drain_moves_tasks_and_nothing_new_lands() {
    let mut sim = Sim::new(3);
    let web = sim.create(web(6));
    sim.settle();
    sim.nodes.get_mut(&2).unwrap().availability = Availability::Drain;
    sim.settle();
    assert_eq!(sim.running(&web), vec![3, 0, 3]);
    scale(&mut sim, &web, 9);
    assert_eq!(sim.running(&web), vec![5, 0, 4], "nothing new on the drained node");
    assert_eq!(sim.live_slots(&web).len(), 9);
}

#[test]
fn tasks_of_a_down_node_are_replaced_at_once() {
    let mut sim = Sim::new(3);
    let web = sim.create(web(6));
    sim.settle();
    sim.nodes.get_mut(&3).unwrap().status = NodeStatus::Down;
    sim.tick();
    sim.tick();
    assert_eq!(sim.running(&web), vec![3, 3, 0], "replaced within two ticks, no restart delay");
    // The old tasks keep their slot's history; the down node never reported, so they are not terminal.
    let old: Vec<_> = sim.tables.tasks.values().filter(|t| t.node_id == Some(3)).collect();
    assert!(old.iter().all(|t| t.desired == TaskState::Shutdown), "{old:?}");
}

#[test]
fn a_failing_task_follows_its_restart_policy() {
    let mut sim = Sim::new(2);
    let mut spec = web(1);
    spec["TaskTemplate"]["RestartPolicy"] =
        json!({"Condition": "on-failure", "Delay": 1_000_000_000u64, "MaxAttempts": 2});
    let web = sim.create(spec);
    sim.failing.push(web.clone());
    // 1 s delay between attempts: ticks are 100 ms.
    for _ in 0..100 {
        sim.tick();
    }
    let tasks: Vec<_> = sim.tables.tasks.values().filter(|t| t.service_id == web).collect();
    assert_eq!(tasks.len(), 3, "the first run and 2 restarts, then it stays down: {tasks:?}");
    assert!(tasks.iter().all(|t| t.status.state == TaskState::Failed));
    let times: Vec<u64> = tasks.iter().map(|t| shoal_model::services::unix_ms(&t.created_at).unwrap()).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] >= 1000), "restarts wait the delay: {times:?}");

    // Condition none: never restarted.
    let mut spec = json!({"Name": "once", "TaskTemplate": {"ContainerSpec": {"Image": "i"}, "RestartPolicy": {"Condition": "none"}}});
    spec["Mode"] = json!({"Replicated": {"Replicas": 1}});
    let once = sim.create(spec);
    sim.failing.push(once.clone());
    sim.settle();
    assert_eq!(sim.tables.tasks.values().filter(|t| t.service_id == once).count(), 1);
}

#[test]
fn global_services_run_one_task_per_eligible_node() {
    let mut sim = Sim::new(4);
    let spec = json!({"Name": "agent", "TaskTemplate": {"ContainerSpec": {"Image": "i"}, "Placement": {"Constraints": ["node.role==worker"]}}, "Mode": {"Global": {}}});
    let g = sim.create(spec);
    sim.settle();
    assert_eq!(sim.running(&g), vec![0, 1, 1, 1]);
    sim.nodes.get_mut(&4).unwrap().availability = Availability::Drain;
    sim.settle();
    assert_eq!(sim.running(&g), vec![0, 1, 1, 0]);
}

#[test]
fn unschedulable_tasks_stay_pending_with_the_reason() {
    let mut sim = Sim::new(2);
    let mut spec = web(3);
    spec["TaskTemplate"]["Placement"] = json!({"Constraints": ["node.labels.gpu==yes"]});
    let web = sim.create(spec);
    sim.settle();
    let pending: Vec<_> = sim.tables.tasks.values().filter(|t| t.service_id == web).collect();
    assert_eq!(pending.len(), 3, "one task per slot, not one per tick");
    for t in pending {
        assert_eq!(t.status.state, TaskState::Pending);
        assert_eq!(t.status.message, "no suitable node (scheduling constraints not satisfied on 2 nodes)");
    }
}

#[test]
fn rebalancing_moves_tasks_onto_a_node_that_returns_only_when_asked() {
    for (rebalance, want) in [(false, vec![3, 3, 0]), (true, vec![2, 2, 2])] {
        let mut sim = Sim::new(3);
        let mut spec = web(6);
        if rebalance {
            spec["Labels"] = json!({"shoal.rebalance": "true"});
        }
        let web = sim.create(spec);
        sim.nodes.get_mut(&3).unwrap().availability = Availability::Drain;
        sim.settle();
        assert_eq!(sim.running(&web), vec![3, 3, 0]);
        sim.nodes.get_mut(&3).unwrap().availability = Availability::Active;
        sim.settle();
        assert_eq!(sim.running(&web), want, "rebalance={rebalance}");
        assert_eq!(sim.live_slots(&web), vec![1, 2, 3, 4, 5, 6]);
    }
}

fn rolling(image: &str, failure_action: &str) -> Value {
    let mut spec = web(6);
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(image);
    spec["UpdateConfig"] = json!({"Parallelism": 2, "Delay": 1_000_000_000u64, "Monitor": 500_000_000u64, "FailureAction": failure_action});
    spec["RollbackConfig"] = json!({"Parallelism": 0, "Monitor": 100_000_000u64});
    spec
}

#[test]
fn a_rolling_update_goes_two_slots_at_a_time_with_a_delay() {
    let mut sim = Sim::new(3);
    let web = sim.create(rolling("v1", "pause"));
    sim.settle();
    assert_eq!(sim.live_images(&web), BTreeMap::from([("v1".to_string(), 6)]));
    sim.update(&web, |s| s["TaskTemplate"]["ContainerSpec"]["Image"] = json!("v2"));
    // Watch the old tasks go, tick by tick (100 ms each).
    let mut steps: Vec<(u64, usize)> = Vec::new();
    let mut last = 6;
    for _ in 0..200 {
        sim.tick();
        let old = sim.live_images(&web).get("v1").copied().unwrap_or(0);
        if old != last {
            steps.push((sim.now, last - old));
            last = old;
        }
    }
    assert_eq!(steps.iter().map(|s| s.1).collect::<Vec<_>>(), vec![2, 2, 2], "two slots at a time: {steps:?}");
    for w in steps.windows(2) {
        assert!(w[1].0 - w[0].0 >= 1000, "batches at least the 1 s delay apart: {steps:?}");
    }
    assert_eq!(sim.live_images(&web), BTreeMap::from([("v2".to_string(), 6)]));
    assert_eq!(sim.tables.services[&web].update_status.as_ref().unwrap().state, "completed");
    assert_eq!(sim.live_slots(&web), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_failing_update_with_failure_action_rollback_rolls_back() {
    let mut sim = Sim::new(3);
    let web = sim.create(rolling("v1", "rollback"));
    sim.settle();
    sim.update(&web, |s| s["TaskTemplate"]["ContainerSpec"]["Image"] = json!("fail:v2"));
    for _ in 0..100 {
        sim.tick();
    }
    let s = &sim.tables.services[&web];
    let spec: Value = serde_json::from_str(&s.spec).unwrap();
    assert_eq!(spec["TaskTemplate"]["ContainerSpec"]["Image"], "v1", "the spec rolled back");
    assert_eq!(s.update_status.as_ref().unwrap().state, "rollback_completed", "{:?}", s.update_status);
    assert_eq!(sim.live_images(&web), BTreeMap::from([("v1".to_string(), 6)]));
}

#[test]
fn a_failing_update_with_failure_action_pause_pauses() {
    let mut sim = Sim::new(3);
    let web = sim.create(rolling("v1", "pause"));
    sim.settle();
    sim.update(&web, |s| s["TaskTemplate"]["ContainerSpec"]["Image"] = json!("fail:v2"));
    for _ in 0..60 {
        sim.tick();
    }
    let u = sim.tables.services[&web].update_status.clone().unwrap();
    assert_eq!(u.state, "paused");
    assert!(u.message.contains("update paused due to failure or early termination of task"), "{}", u.message);
    assert_eq!(sim.live_images(&web).get("v1"), Some(&4), "only the first batch was touched");
}

proptest::proptest! {
    /// Whatever sequence of scales, the service ends up with exactly N live slots, numbered 1..=N.
    #[test]
    fn scaling_to_n_yields_exactly_n_live_slots(steps in proptest::collection::vec(0u64..25, 1..6), nodes in 1u64..5) {
        let mut sim = Sim::new(nodes);
        let web = sim.create(web(1));
        sim.settle();
        for n in steps {
            scale(&mut sim, &web, n);
            proptest::prop_assert_eq!(sim.live_slots(&web), (1..=n).collect::<Vec<u64>>());
            proptest::prop_assert_eq!(sim.running(&web).iter().sum::<usize>() as u64, n);
        }
    }
}
