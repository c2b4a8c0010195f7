//! Scheduler harness: build a snapshot, call `plan`, assert on counts and placements.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};
use shoal_model::spec::ServiceSpec;
use shoal_model::{Availability, NodeId, Role};
use shoal_scheduler::{Decision, NodeInfo, Snapshot, TaskToPlace, plan};

fn node(id: NodeId, f: impl FnOnce(&mut NodeInfo)) -> NodeInfo {
    let mut n = NodeInfo {
        id,
        hostname: format!("node{id}"),
        role: if id == 1 { Role::Manager } else { Role::Worker },
        labels: BTreeMap::new(),
        ready: true,
        availability: Availability::Active,
        nano_cpus: 2_000_000_000,
        memory: 1 << 30,
    };
    f(&mut n);
    n
}

fn cluster(n: u64) -> Snapshot {
    Snapshot { nodes: (1..=n).map(|i| node(i, |_| {})).collect(), usage: HashMap::new() }
}

fn spec(task_template: Value) -> Arc<ServiceSpec> {
    let mut s = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}});
    for (k, v) in task_template.as_object().unwrap() {
        s["TaskTemplate"][k] = v.clone();
    }
    Arc::new(ServiceSpec::parse(&s).unwrap())
}

fn tasks(service: &str, spec: &Arc<ServiceSpec>, n: usize) -> Vec<TaskToPlace> {
    (0..n)
        .map(|i| TaskToPlace {
            task_id: format!("{service}.{}", i + 1),
            service_id: service.into(),
            spec: spec.clone(),
            node: None,
        })
        .collect()
}

/// Tasks per node, in node order, and the pending reasons.
fn spread(snapshot: &Snapshot, tasks: &[TaskToPlace]) -> (Vec<usize>, Vec<String>) {
    let p = plan(snapshot, tasks);
    let mut per: Vec<usize> = vec![0; snapshot.nodes.len()];
    let mut pending = Vec::new();
    for (_, d) in &p.decisions {
        match d {
            Decision::Place(id) => per[snapshot.nodes.iter().position(|n| n.id == *id).unwrap()] += 1,
            Decision::Pending(why) => pending.push(why.clone()),
        }
    }
    (per, pending)
}

#[test]
fn five_on_three_nodes_is_2_2_1_and_thirty_is_10_10_10() {
    let s = spec(json!({}));
    assert_eq!(spread(&cluster(3), &tasks("web", &s, 5)).0, vec![2, 2, 1]);
    assert_eq!(spread(&cluster(3), &tasks("web", &s, 30)).0, vec![10, 10, 10]);
}

#[test]
fn spread_counts_what_is_already_there() {
    // Node 1 already runs 3 tasks of web and node 2 runs 5 of another service: the next 3 tasks
    // go to the nodes with fewest web tasks, ties broken by fewest tasks overall.
    let s = spec(json!({}));
    let mut snap = cluster(3);
    for _ in 0..3 {
        snap.usage.entry(1).or_default().add("web", &s);
    }
    for _ in 0..5 {
        snap.usage.entry(2).or_default().add("db", &s);
    }
    let p = plan(&snap, &tasks("web", &s, 3));
    let placed: Vec<Decision> = p.decisions.into_iter().map(|(_, d)| d).collect();
    assert_eq!(placed, vec![Decision::Place(3), Decision::Place(2), Decision::Place(3)]);
}

#[test]
fn scenarios() {
    struct Case {
        name: &'static str,
        snapshot: Snapshot,
        spec: Arc<ServiceSpec>,
        n: usize,
        per_node: Vec<usize>,
        pending: Option<&'static str>,
    }
    let labelled = |zone: &str| -> BTreeMap<String, String> { BTreeMap::from([("zone".into(), zone.into())]) };
    let cases = vec![
        Case {
            name: "constraint role==worker",
            snapshot: cluster(3),
            spec: spec(json!({"Placement": {"Constraints": ["node.role==worker"]}})),
            n: 4,
            per_node: vec![0, 2, 2],
            pending: None,
        },
        Case {
            name: "constraint on a label",
            snapshot: Snapshot {
                nodes: vec![
                    node(1, |n| n.labels = labelled("a")),
                    node(2, |n| n.labels = labelled("b")),
                    node(3, |_| {}),
                ],
                usage: HashMap::new(),
            },
            spec: spec(json!({"Placement": {"Constraints": ["node.labels.zone==b"]}})),
            n: 2,
            per_node: vec![0, 2, 0],
            pending: None,
        },
        Case {
            name: "drained and down nodes take nothing",
            snapshot: Snapshot {
                nodes: vec![
                    node(1, |n| n.availability = Availability::Drain),
                    node(2, |n| n.ready = false),
                    node(3, |_| {}),
                ],
                usage: HashMap::new(),
            },
            spec: spec(json!({})),
            n: 3,
            per_node: vec![0, 0, 3],
            pending: None,
        },
        Case {
            name: "memory runs out: the rest stays pending, saying why",
            snapshot: cluster(3),
            spec: spec(json!({"Resources": {"Reservations": {"MemoryBytes": 400u64 << 20}}})),
            n: 8,
            per_node: vec![2, 2, 2],
            pending: Some("no suitable node (insufficient memory on 3 nodes)"),
        },
        Case {
            name: "max replicas per node",
            snapshot: cluster(2),
            spec: spec(json!({"Placement": {"MaxReplicas": 1}})),
            n: 3,
            per_node: vec![1, 1],
            pending: Some("no suitable node (max replicas per node limit exceed on 2 nodes)"),
        },
        Case {
            name: "nothing available",
            snapshot: Snapshot {
                nodes: vec![node(1, |n| n.availability = Availability::Drain)],
                usage: HashMap::new(),
            },
            spec: spec(json!({})),
            n: 1,
            per_node: vec![0],
            pending: Some("no suitable node (1 node not available)"),
        },
        Case {
            name: "mixed reasons, most first",
            snapshot: Snapshot {
                nodes: vec![
                    node(1, |n| n.ready = false),
                    node(2, |n| n.memory = 1 << 20),
                    node(3, |n| n.memory = 1 << 20),
                    node(4, |n| n.memory = 1 << 20),
                ],
                usage: HashMap::new(),
            },
            spec: spec(json!({"Resources": {"Reservations": {"MemoryBytes": 64u64 << 20}}})),
            n: 1,
            per_node: vec![0, 0, 0, 0],
            pending: Some("no suitable node (insufficient memory on 3 nodes; 1 node not available)"),
        },
        Case {
            name: "spread over a label first",
            snapshot: Snapshot {
                nodes: vec![
                    node(1, |n| n.labels = labelled("a")),
                    node(2, |n| n.labels = labelled("a")),
                    node(3, |n| n.labels = labelled("a")),
                    node(4, |n| n.labels = labelled("b")),
                ],
                usage: HashMap::new(),
            },
            spec: spec(json!({"Placement": {"Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}})),
            n: 4,
            per_node: vec![1, 1, 0, 2],
            pending: None,
        },
    ];
    for c in cases {
        let (per, pending) = spread(&c.snapshot, &tasks("web", &c.spec, c.n));
        assert_eq!(per, c.per_node, "{}", c.name);
        match c.pending {
            None => assert!(pending.is_empty(), "{}: {pending:?}", c.name),
            Some(why) => assert!(!pending.is_empty() && pending.iter().all(|p| p == why), "{}: {pending:?}", c.name),
        }
    }
}

#[test]
fn host_ports_do_not_collide() {
    let mut s = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}});
    s["EndpointSpec"] = json!({"Ports": [{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]});
    let s = Arc::new(ServiceSpec::parse(&s).unwrap());
    let (per, pending) = spread(&cluster(2), &tasks("web", &s, 3));
    assert_eq!(per, vec![1, 1]);
    assert_eq!(pending, vec!["no suitable node (host-mode port already in use on 2 nodes)".to_string()]);
}

#[test]
fn global_tasks_are_checked_on_their_own_node() {
    let s = spec(json!({"Placement": {"Constraints": ["node.role==worker"]}}));
    let t =
        |id: &str, node| TaskToPlace { task_id: id.into(), service_id: "g".into(), spec: s.clone(), node: Some(node) };
    let p = plan(&cluster(3), &[t("g1", 1), t("g2", 2), t("g9", 9)]);
    assert_eq!(
        p.decisions[0].1,
        Decision::Pending("no suitable node (scheduling constraints not satisfied on 1 node)".into())
    );
    assert_eq!(p.decisions[1].1, Decision::Place(2));
    assert!(matches!(&p.decisions[2].1, Decision::Pending(m) if m.contains("no longer in the cluster")));
}

#[test]
fn the_same_input_gives_the_same_plan() {
    let s = spec(json!({}));
    let t = tasks("web", &s, 50);
    assert_eq!(plan(&cluster(7), &t), plan(&cluster(7), &t));
}

proptest::proptest! {
    /// However many nodes and tasks, with no limits every task is placed and the spread is even
    /// (no node has more than one task more than another).
    #[test]
    fn spread_is_even(nodes in 1u64..20, n in 0usize..200) {
        let s = spec(json!({}));
        let (per, pending) = spread(&cluster(nodes), &tasks("web", &s, n));
        proptest::prop_assert!(pending.is_empty());
        proptest::prop_assert_eq!(per.iter().sum::<usize>(), n);
        proptest::prop_assert!(per.iter().max().unwrap() - per.iter().min().unwrap() <= 1);
    }
}
