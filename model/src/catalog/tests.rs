//! Table tests of the catalog's semantics: health aggregation, node checks, task shutdown, reaping.

use std::collections::BTreeMap;

use super::reap::{expired_down_nodes, expired_on_node};
use super::*;
use crate::command::{Command, CommandResult};
use crate::node::{NodeStatus, Resources, Role};
use crate::services::{NewTask, ServiceCommand, TaskState, TaskStatus};
use crate::state::State;

fn node(id: u64, name: &str) -> Command {
    Command::NodeUpsert {
        id,
        name: name.into(),
        cluster_addr: format!("10.0.0.{id}:2377"),
        http_addr: format!("10.0.0.{id}:8500"),
        role: if id == 1 { Role::Manager } else { Role::Worker },
        resources: Resources::default(),
    }
}

fn check(id: &str, status: Health) -> CheckSpec {
    CheckSpec {
        id: id.into(),
        name: format!("check {id}"),
        notes: String::new(),
        def: CheckDef { kind: CheckKind::Ttl { ttl_ms: 10_000 }, ..CheckDef::manual() },
        status,
        output: String::new(),
    }
}

fn inst(id: &str, name: &str, checks: Vec<CheckSpec>) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        name: name.into(),
        tags: vec!["v1".into()],
        address: "172.17.0.2".into(),
        port: 8080,
        meta: BTreeMap::new(),
        weights: Weights::default(),
        enable_tag_override: false,
        task_id: None,
        container_id: None,
        checks,
    }
}

fn register(node: &str, source: Source, i: InstanceSpec) -> Command {
    Command::Catalog(CatalogCommand::Register { node: node.into(), source, instance: i })
}

/// A state with nodes n1 (manager) and n2, applying `cmds` from index 10 on.
fn state(cmds: Vec<Command>) -> (State, Vec<CommandResult>) {
    let mut s = State::default();
    s.apply(1, &node(1, "n1"));
    s.apply(2, &node(2, "n2"));
    let results = cmds.iter().enumerate().map(|(i, c)| s.apply(10 + i as u64, c)).collect();
    (s, results)
}

fn health_of(s: &State, name: &str) -> Vec<(String, Health)> {
    s.service_health(name).1.iter().map(|e| (e.instance.id.to_string(), e.health())).collect()
}

#[test]
fn health_is_the_worst_of_own_and_node_checks() {
    use Health::*;
    let cases: Vec<(&str, Vec<Health>, Option<NodeStatus>, Health)> = vec![
        ("no checks: passing", vec![], None, Passing),
        ("all passing", vec![Passing, Passing], None, Passing),
        ("one warning", vec![Passing, Warning], None, Warning),
        ("critical beats warning", vec![Warning, Critical], None, Critical),
        ("node down makes a passing instance critical", vec![Passing], Some(NodeStatus::Down), Critical),
        ("node back up: passing again", vec![Passing], Some(NodeStatus::Ready), Passing),
    ];
    for (name, statuses, node_status, want) in cases {
        let checks = statuses.iter().enumerate().map(|(i, h)| check(&format!("c{i}"), *h)).collect();
        let mut cmds = vec![register("n2", Source::Agent, inst("web-1", "web", checks))];
        if let Some(st) = node_status {
            cmds.push(Command::NodeSetStatus { id: 2, status: NodeStatus::Down });
            if st == NodeStatus::Ready {
                cmds.push(Command::NodeSetStatus { id: 2, status: NodeStatus::Ready });
            }
        }
        let (s, _) = state(cmds);
        assert_eq!(health_of(&s, "web"), vec![("web-1".to_string(), want)], "{name}");
    }
}

#[test]
fn node_status_moves_the_index_of_every_service_on_the_node() {
    let (mut s, _) = state(vec![
        register("n2", Source::Agent, inst("web-1", "web", vec![])),
        register("n1", Source::Agent, inst("db-1", "db", vec![])),
    ]);
    let (web, db) = (s.service_index("web"), s.service_index("db"));
    s.apply(50, &Command::NodeSetStatus { id: 2, status: NodeStatus::Down });
    assert_eq!(s.service_index("web"), 50, "web runs on the node that went down");
    assert_eq!(s.service_index("db"), db, "db's node did not change");
    assert!(web < 50);
    let (_, entries) = s.service_health("web");
    let serf = &entries[0].checks[0];
    assert_eq!((serf.check.id.as_str(), serf.check.status), (SERF_CHECK_ID, Health::Critical));
    assert_eq!(serf.check.output, "Agent not live or unreachable");
}

#[test]
fn maintenance_is_worst_and_ends_only_when_disabled() {
    let maint = |sid: Option<&str>, on: bool| {
        Command::Catalog(CatalogCommand::Maintenance {
            node: "n2".into(),
            service_id: sid.map(Into::into),
            reason: on.then(|| "upgrading".into()),
        })
    };
    type Case = (&'static str, Vec<Command>, Vec<(&'static str, Health)>);
    let cases: Vec<Case> = vec![
        (
            "service maintenance: only that instance",
            vec![maint(Some("web-1"), true)],
            vec![("web-1", Health::Maintenance), ("web-2", Health::Passing)],
        ),
        (
            "node maintenance: every instance on it",
            vec![maint(None, true)],
            vec![("web-1", Health::Maintenance), ("web-2", Health::Maintenance)],
        ),
        (
            "enabled then disabled",
            vec![maint(None, true), maint(None, false)],
            vec![("web-1", Health::Passing), ("web-2", Health::Passing)],
        ),
    ];
    for (name, extra, want) in cases {
        let mut cmds = vec![
            register("n2", Source::Agent, inst("web-1", "web", vec![])),
            register("n2", Source::Agent, inst("web-2", "web", vec![])),
        ];
        cmds.extend(extra);
        let (s, results) = state(cmds);
        assert!(results.iter().all(|r| r.succeeded()), "{name}: {results:?}");
        let got: Vec<(String, Health)> = health_of(&s, "web");
        let want: Vec<(String, Health)> = want.into_iter().map(|(i, h)| (i.to_string(), h)).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn unchanged_writes_change_nothing_and_move_no_index() {
    let spec = inst("web-1", "web", vec![check("c", Health::Critical)]);
    let pass = |renew| {
        Command::Catalog(CatalogCommand::UpdateChecks {
            node: "n2".into(),
            updates: vec![CheckUpdate {
                check_id: "c".into(),
                status: Health::Passing,
                output: "ok".into(),
                ttl_renewal: renew,
            }],
        })
    };
    let (mut s, r) = state(vec![register("n2", Source::Registrator, spec.clone()), pass(false)]);
    assert_eq!(r, vec![CommandResult::Applied(true), CommandResult::Applied(true)]);
    let index = s.service_index("web");
    let cases: Vec<(&str, Command, bool)> = vec![
        ("the same registration again (a resync)", register("n2", Source::Registrator, spec.clone()), false),
        ("the same check result again", pass(false), false),
        ("a TTL renewal with the same result still counts", pass(true), true),
        (
            "a sync with the same list",
            Command::Catalog(CatalogCommand::Sync {
                node: "n2".into(),
                source: Source::Registrator,
                instances: vec![spec.clone()],
            }),
            false,
        ),
    ];
    let mut at = 100;
    for (name, cmd, changes) in cases {
        at += 1;
        assert_eq!(s.apply(at, &cmd), CommandResult::Applied(changes), "{name}");
        let moved = s.service_index("web") != index;
        assert_eq!(moved, changes, "{name}: index moved?");
        if changes {
            break;
        }
    }
    // Re-registering keeps the check's status: a resync does not flap the instance to critical.
    assert_eq!(health_of(&s, "web"), vec![("web-1".to_string(), Health::Passing)]);
}

#[test]
fn sync_removes_what_its_source_no_longer_has_and_nothing_else() {
    let (s, r) = state(vec![
        register("n2", Source::Registrator, inst("a", "legacy", vec![])),
        register("n2", Source::Registrator, inst("b", "legacy", vec![])),
        register("n2", Source::Agent, inst("c", "legacy", vec![])),
        Command::Catalog(CatalogCommand::Sync {
            node: "n2".into(),
            source: Source::Registrator,
            instances: vec![inst("b", "legacy", vec![])],
        }),
    ]);
    assert!(r.iter().all(|r| r.succeeded()), "{r:?}");
    let ids: Vec<String> = health_of(&s, "legacy").into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["b", "c"], "a (gone from Docker) removed; c (another source) kept");
}

fn task_setup() -> Vec<Command> {
    let task = |id: &str| NewTask {
        id: id.into(),
        service_id: "s1".into(),
        slot: 1,
        node_id: Some(2),
        spec_version: 1,
        desired: TaskState::Running,
    };
    vec![
        Command::Service(ServiceCommand::Create {
            id: "s1".into(),
            name: "web".into(),
            spec: "{}".into(),
            at: "t".into(),
        }),
        Command::Service(ServiceCommand::CreateTasks { tasks: vec![task("t1"), task("t2")], at: "t".into() }),
        register("n2", Source::Task, InstanceSpec { task_id: Some("t1".into()), ..inst("web.1.t1", "web", vec![]) }),
        register("n2", Source::Task, InstanceSpec { task_id: Some("t2".into()), ..inst("web.1.t2", "web", vec![]) }),
    ]
}

#[test]
fn a_task_told_to_go_leaves_the_catalog_in_the_same_entry() {
    let ended = TaskStatus {
        state: TaskState::Failed,
        timestamp: "t".into(),
        message: "failed".into(),
        err: Some("exit 1".into()),
        container_id: None,
        exit_code: Some(1),
    };
    let cases: Vec<(&str, Command, Vec<&str>)> = vec![
        (
            "desired shutdown",
            Command::Service(ServiceCommand::SetDesired { id: "t1".into(), desired: TaskState::Shutdown }),
            vec!["web.1.t2"],
        ),
        (
            "task failed",
            Command::Service(ServiceCommand::SetStatus { id: "t1".into(), node_id: 2, status: ended }),
            vec!["web.1.t2"],
        ),
        ("service removed", Command::Service(ServiceCommand::Remove { id: "s1".into() }), vec![]),
        (
            "desired running again: nothing leaves",
            Command::Service(ServiceCommand::SetDesired { id: "t1".into(), desired: TaskState::Running }),
            vec!["web.1.t1", "web.1.t2"],
        ),
    ];
    for (name, cmd, want) in cases {
        let (mut s, r) = state(task_setup());
        assert!(r.iter().all(|r| r.succeeded()), "{name}: setup {r:?}");
        s.apply(100, &cmd);
        let ids: Vec<String> = health_of(&s, "web").into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, want, "{name}");
        if want.len() < 2 {
            assert_eq!(s.service_index("web"), 100, "{name}: watchers wake at the shutdown's index");
        }
    }
}

#[test]
fn an_instance_of_a_task_that_is_going_away_is_refused() {
    let mut cmds = task_setup();
    cmds.truncate(2);
    cmds.push(Command::Service(ServiceCommand::SetDesired { id: "t1".into(), desired: TaskState::Shutdown }));
    cmds.push(register(
        "n2",
        Source::Task,
        InstanceSpec { task_id: Some("t1".into()), ..inst("web.1.t1", "web", vec![]) },
    ));
    cmds.push(register("n2", Source::Task, InstanceSpec { task_id: Some("nope".into()), ..inst("x", "web", vec![]) }));
    let (s, r) = state(cmds);
    assert!(matches!(&r[3], CommandResult::Refused(why) if why.message.contains("shutting down")), "{:?}", r[3]);
    assert!(matches!(&r[4], CommandResult::Refused(why) if why.kind == crate::RefusalKind::NotFound), "{:?}", r[4]);
    assert!(health_of(&s, "web").is_empty());
}

#[test]
fn bad_registrations_are_refused_whole() {
    let mut zero_interval = check("h", Health::Critical);
    zero_interval.def = CheckDef {
        kind: CheckKind::Http {
            url: "http://x/".into(),
            method: "GET".into(),
            headers: BTreeMap::new(),
            tls_skip_verify: false,
        },
        interval_ms: 0,
        ..CheckDef::manual()
    };
    let bad_meta = InstanceSpec { meta: [("a.b".to_string(), "1".to_string())].into(), ..inst("m", "web", vec![]) };
    let cases: Vec<(&str, Command, &str)> = vec![
        ("no name", register("n2", Source::Agent, inst("x", "", vec![])), "needs a name"),
        ("no id", register("n2", Source::Agent, inst("", "web", vec![])), "needs an ID"),
        (
            "zero interval",
            register("n2", Source::Agent, inst("x", "web", vec![zero_interval])),
            "interval greater than 0",
        ),
        ("bad meta key", register("n2", Source::Agent, bad_meta), "meta key"),
        ("unknown node", register("nope", Source::Agent, inst("x", "web", vec![])), "no cluster node"),
        (
            "check twice",
            register(
                "n2",
                Source::Agent,
                inst("x", "web", vec![check("c", Health::Passing), check("c", Health::Passing)]),
            ),
            "given twice",
        ),
        (
            "serfHealth is reserved",
            register("n2", Source::Agent, inst("x", "web", vec![check(SERF_CHECK_ID, Health::Passing)])),
            "reserved",
        ),
    ];
    for (name, cmd, words) in cases {
        let (s, r) = state(vec![cmd]);
        match &r[0] {
            CommandResult::Refused(why) => assert!(why.message.contains(words), "{name}: {}", why.message),
            other => panic!("{name}: not refused: {other:?}"),
        }
        let (fresh, _) = state(vec![]);
        assert_eq!(s.catalog, fresh.catalog, "{name}: nothing stored, no index moved");
    }
}

#[test]
fn check_ids_are_unique_per_node() {
    let (_, r) = state(vec![
        register("n2", Source::Agent, inst("a", "web", vec![check("c", Health::Passing)])),
        register("n2", Source::Agent, inst("b", "web", vec![check("c", Health::Passing)])),
        register("n1", Source::Agent, inst("b", "web", vec![check("c", Health::Passing)])),
    ]);
    assert!(r[0].succeeded());
    assert!(matches!(&r[1], CommandResult::Refused(w) if w.message.contains("taken")), "{:?}", r[1]);
    assert!(r[2].succeeded(), "another node may use the same check ID");
}

#[test]
fn deregistration_after_the_critical_period() {
    let mut c = check("c", Health::Critical);
    c.def.deregister_after_ms = Some(90_000);
    let mut short = check("s", Health::Critical);
    short.def.deregister_after_ms = Some(1_000); // raised to Consul's minimum, one minute
    let (s, _) = state(vec![
        register("n2", Source::Agent, inst("long", "web", vec![c])),
        register("n2", Source::Agent, inst("short", "web", vec![short])),
        register("n2", Source::Agent, inst("none", "web", vec![check("n", Health::Critical)])),
    ]);
    let since: BTreeMap<String, u64> =
        [("c", 0), ("s", 0), ("n", 0)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let cases: Vec<(&str, u64, Vec<&str>)> = vec![
        ("30 s critical: nothing", 30_000, vec![]),
        ("61 s: the short one (raised to 1 min)", 61_000, vec!["short"]),
        ("91 s: both with a period; never the one without", 91_000, vec!["long", "short"]),
    ];
    for (name, now, want) in cases {
        assert_eq!(expired_on_node(s.catalog.node_instances("n2"), &since, now), want, "{name}");
    }
    assert!(
        expired_on_node(s.catalog.node_instances("n2"), &BTreeMap::new(), 1 << 40).is_empty(),
        "not critical here: nothing"
    );
}

#[test]
fn a_down_nodes_instances_are_removed_after_the_period() {
    let (mut s, _) = state(vec![
        register("n2", Source::Registrator, inst("legacy", "legacy", vec![])),
        register("n2", Source::Catalog, inst("ext", "ext", vec![])),
        Command::NodeSetStatus { id: 2, status: NodeStatus::Down },
    ]);
    let since: BTreeMap<String, u64> = [("n2".to_string(), 1_000)].into();
    assert!(expired_down_nodes(&s, &since, 30_000, 60_000).is_empty(), "within the period");
    let cmds = expired_down_nodes(&s, &since, 62_000, 60_000);
    assert_eq!(
        cmds,
        vec![CatalogCommand::Deregister { node: "n2".into(), id: "legacy".into() }],
        "the catalog's own entry stays"
    );
    s.apply(99, &Command::NodeSetStatus { id: 2, status: NodeStatus::Ready });
    assert!(expired_down_nodes(&s, &since, 62_000, 60_000).is_empty(), "back up: nothing goes");
}

#[test]
fn removing_a_node_removes_its_instances() {
    let (mut s, _) = state(vec![register("n2", Source::Registrator, inst("a", "legacy", vec![]))]);
    s.apply(50, &Command::NodeRemove { id: 2 });
    assert!(s.service_health("legacy").1.is_empty());
    assert_eq!(s.catalog.instance_count(), 0);
    assert!(s.service_index("legacy") >= 50);
}

#[test]
fn the_consul_service_lists_the_managers() {
    let (s, _) = state(vec![]);
    let (_, entries) = s.service_health("consul");
    let nodes: Vec<(&str, u16)> = entries.iter().map(|e| (e.node.name.as_str(), e.instance.port)).collect();
    assert_eq!(nodes, [("n1", 2377)]);
    assert!(s.catalog_services().1.contains_key("consul"));
}

#[test]
fn catalog_register_makes_external_nodes_and_keeps_agent_entries_safe() {
    let ext = |service: Option<InstanceSpec>| {
        Command::Catalog(CatalogCommand::CatalogRegister {
            node: "db-host".into(),
            address: "192.0.2.7".into(),
            meta: BTreeMap::new(),
            skip_node_update: false,
            service,
            check: Some((None, check("db-alive", Health::Passing))),
        })
    };
    let (s, r) = state(vec![
        ext(Some(inst("pg", "postgres", vec![]))),
        register("n2", Source::Registrator, inst("legacy", "legacy", vec![])),
        Command::Catalog(CatalogCommand::CatalogRegister {
            node: "n2".into(),
            address: String::new(),
            meta: BTreeMap::new(),
            skip_node_update: false,
            service: Some(inst("legacy", "legacy", vec![])),
            check: None,
        }),
    ]);
    assert!(r[0].succeeded() && r[1].succeeded(), "{r:?}");
    assert!(matches!(&r[2], CommandResult::Refused(w) if w.message.contains("registrator")), "{:?}", r[2]);
    let (_, pg) = s.service_health("postgres");
    assert_eq!(pg[0].node.address, "192.0.2.7");
    assert_eq!(pg[0].address(), "172.17.0.2");
    assert_eq!(pg[0].checks.iter().map(|c| c.check.id.as_str()).collect::<Vec<_>>(), ["db-alive"]);
    assert!(s.catalog_nodes().iter().any(|n| n.name == "db-host" && !n.cluster));
}

#[test]
fn the_snapshot_resolves_addresses_and_health() {
    let (s, _) = state(vec![
        register("n2", Source::Agent, inst("web-1", "web", vec![check("c", Health::Warning)])),
        register("n2", Source::Agent, InstanceSpec { address: String::new(), ..inst("web-2", "web", vec![]) }),
    ]);
    let snap = s.catalog_snapshot();
    let web = &snap.services["web"];
    let got: Vec<(&str, &str, bool, Health)> =
        web.iter().map(|i| (i.id().as_str(), i.address.as_str(), i.own_address, i.health)).collect();
    assert_eq!(got, [("web-1", "172.17.0.2", true, Health::Warning), ("web-2", "10.0.0.2", false, Health::Passing)]);
    assert_eq!(snap.nodes["n1"].address, "10.0.0.1");
    assert!(snap.services.contains_key("consul"));
    assert_eq!(snap.index, s.catalog_snapshot_index());
}

#[test]
fn a_snapshot_rebuild_shares_the_services_that_did_not_change() {
    let (mut s, _) = state(vec![
        register("n2", Source::Agent, inst("web-1", "web", vec![])),
        register("n2", Source::Agent, inst("db-1", "db", vec![])),
    ]);
    let first = s.catalog_snapshot();
    s.apply(60, &register("n1", Source::Agent, inst("web-2", "web", vec![])));
    let second = s.catalog_snapshot_from(Some(&first));
    assert!(std::sync::Arc::ptr_eq(&first.services["db"], &second.services["db"]), "db did not change: shared");
    assert_eq!(second.services["web"].len(), 2, "web was rebuilt");
    assert_eq!(second, s.catalog_snapshot(), "a partial rebuild equals a full one");
}
