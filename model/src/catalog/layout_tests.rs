//! The memory layout of the tables (shared instance records, one sorted `Vec` per service, manual
//! check definitions stored as nothing) changes neither what is serialised nor what is answered.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::snapshot::SnapshotInstance;
use super::*;
use crate::command::Command;
use crate::node::{Resources, Role};
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

fn check(id: &str, def: CheckDef) -> CheckSpec {
    CheckSpec {
        id: id.into(),
        name: format!("check {id}"),
        notes: "n".into(),
        def,
        status: Health::Warning,
        output: "out".into(),
    }
}

fn http() -> CheckDef {
    CheckDef {
        kind: CheckKind::Http {
            url: "http://172.17.0.2:8080/health".into(),
            method: "GET".into(),
            headers: BTreeMap::from([("X".into(), vec!["1".into()])]),
            tls_skip_verify: false,
        },
        interval_ms: 10_000,
        timeout_ms: 1_000,
        deregister_after_ms: Some(90_000),
        success_before_passing: 1,
        failures_before_warning: 2,
        failures_before_critical: 3,
    }
}

fn inst(id: &str, name: &str, address: &str, checks: Vec<CheckSpec>) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        name: name.into(),
        tags: vec!["v1".into(), "blue".into()],
        address: address.into(),
        port: 8080,
        meta: BTreeMap::from([("version".into(), "1.0.0".into())]),
        weights: Weights { passing: 3, warning: 1 },
        enable_tag_override: true,
        task_id: None,
        container_id: Some("c0ffee".into()),
        checks,
    }
}

fn register(node: &str, i: InstanceSpec) -> Command {
    Command::Catalog(CatalogCommand::Register { node: node.into(), source: Source::Agent, instance: i })
}

/// Services `web` (two nodes, two instances on n2, in reverse ID order) and `db`.
fn state() -> State {
    let mut s = State::default();
    s.apply(1, &node(1, "n1"));
    s.apply(2, &node(2, "n2"));
    s.apply(3, &node(3, "n3"));
    let cmds = [
        register("n2", inst("web-b", "web", "172.17.0.3", vec![check("b-http", http())])),
        register("n2", inst("web-a", "web", "", vec![check("a-manual", CheckDef::manual())])),
        register("n1", inst("web-c", "web", "10.0.0.1", vec![])),
        register("n3", inst("db-1", "db", "172.17.0.9", vec![])),
    ];
    for (i, c) in cmds.iter().enumerate() {
        assert!(s.apply(10 + i as u64, c).succeeded(), "{c:?}");
    }
    s
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("serialises")
}

/// A check as it was stored before its definition was boxed.
#[derive(Serialize)]
struct CheckBefore<'a> {
    id: &'a Text,
    name: &'a Text,
    notes: &'a Text,
    def: &'a CheckDef,
    status: Health,
    output: &'a Text,
    renewals: u64,
    create_index: u64,
    modify_index: u64,
}

#[test]
fn a_check_serialises_as_before_with_either_kind_of_definition() {
    let s = state();
    let mut seen = 0;
    for i in s.catalog.services.values().flat_map(|g| g.instances.iter()) {
        for c in i.checks.values() {
            let before = CheckBefore {
                id: &c.id,
                name: &c.name,
                notes: &c.notes,
                def: &c.def,
                status: c.status,
                output: &c.output,
                renewals: c.renewals,
                create_index: c.create_index,
                modify_index: c.modify_index,
            };
            assert_eq!(json(c), json(&before), "{}", c.id);
            let back: Check = serde_json::from_str(&json(c)).expect("reads back");
            assert_eq!(&back, c, "{}", c.id);
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
    assert_eq!(*StoredDef::from(http()), http());
    assert_eq!(*StoredDef::from(CheckDef::manual()), CheckDef::manual());
    assert_eq!(StoredDef::from(CheckDef::manual()), StoredDef::MANUAL);
    assert!(matches!(StoredDef::from(http()), StoredDef(Some(_))), "a probed definition is boxed");
    assert!(matches!(StoredDef::from(CheckDef::manual()), StoredDef(None)), "the manual one is nothing");
}

#[test]
fn a_service_serialises_as_the_nested_map_it_was() {
    let s = state();
    let web = &s.catalog.services["web"];
    let mut nested: BTreeMap<&str, BTreeMap<&str, &Instance>> = BTreeMap::new();
    for i in &web.instances {
        nested.entry(i.node.as_str()).or_default().insert(i.id.as_str(), &**i);
    }
    assert_eq!(json(&web.instances), json(&nested));
    let order: Vec<(&str, &str)> = web.instances.iter().map(|i| (i.node.as_str(), i.id.as_str())).collect();
    assert_eq!(order, [("n1", "web-c"), ("n2", "web-a"), ("n2", "web-b")], "by node, then ID");
    assert_eq!(web.instances.nodes().map(Text::as_str).collect::<Vec<_>>(), ["n1", "n2"]);

    let back: Catalog = serde_json::from_str(&json(&s.catalog)).expect("reads back");
    assert_eq!(back, s.catalog);
    assert_eq!(back.instance("n2", "web-a").map(|i| i.port), Some(8080));
}

/// A snapshot instance as it was before it shared the catalog's record.
#[derive(Serialize)]
struct SnapshotInstanceBefore<'a> {
    id: &'a Text,
    node: &'a Text,
    address: &'a Text,
    own_address: bool,
    port: u16,
    tags: &'a Vec<Text>,
    meta: &'a VecMap<Text, Text>,
    health: Health,
    weights: Weights,
}

#[test]
fn the_snapshot_shares_the_tables_records_and_serialises_as_before() {
    let mut s = state();
    let snap = s.catalog_snapshot();
    let web = &snap.services["web"];
    let (_, entries) = s.service_health("web");
    assert_eq!(web.len(), entries.len());
    for (si, e) in web.iter().zip(&entries) {
        let before = SnapshotInstanceBefore {
            id: &e.instance.id,
            node: &e.instance.node,
            address: &e.address().into(),
            own_address: !e.instance.address.is_empty() && e.instance.address != e.node.address,
            port: e.instance.port,
            tags: &e.instance.tags,
            meta: &e.instance.meta,
            health: e.health(),
            weights: e.instance.weights,
        };
        assert_eq!(json(si), json(&before), "{}", e.instance.id);
        let back: SnapshotInstance = serde_json::from_str(&json(si)).expect("reads back");
        assert_eq!(&back, si);
        assert_eq!((back.id(), back.tags(), back.meta()), (si.id(), si.tags(), si.meta()));
    }
    let back: snapshot::Snapshot = serde_json::from_str(&json(&snap)).expect("reads back");
    assert_eq!(back, snap);

    // Shared, not copied: the tables and the snapshot hold one record.
    let stored = s.catalog.services["web"].instances.get("n2", "web-b").expect("stored").clone();
    let shared = web.iter().find(|i| i.id() == "web-b").expect("in the snapshot");
    assert_eq!(Arc::strong_count(&stored), 3, "the tables, the snapshot and this test");
    assert_eq!(shared.id().as_ptr(), stored.id.as_ptr());
    drop(stored);

    // A change copies the record the snapshot holds; the snapshot keeps what it read.
    let update =
        CheckUpdate { check_id: "b-http".into(), status: Health::Critical, output: String::new(), ttl_renewal: false };
    assert!(
        s.apply(20, &Command::Catalog(CatalogCommand::UpdateChecks { node: "n2".into(), updates: vec![update] }))
            .succeeded()
    );
    assert_eq!(shared.health, Health::Warning);
    let now = s.catalog_snapshot_from(Some(&snap));
    assert_eq!(now.services["web"].iter().find(|i| i.id() == "web-b").map(|i| i.health), Some(Health::Critical));
    assert_eq!(now, s.catalog_snapshot());
    assert!(Arc::ptr_eq(&now.services["db"], &snap.services["db"]));
}

/// An instance's record is one allocation of the `Arc`'s two counts and the `Instance`: at most
/// 256 bytes, a size class of jemalloc (the `shoal` binary's allocator) and of glibc's bins, not
/// the 320 one above it.
#[test]
fn an_instance_record_fits_in_256_bytes() {
    let record = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Instance>();
    assert!(record <= 256, "Arc<Instance> allocates {record} B");
    assert!(std::mem::size_of::<Check>() <= 136, "{} B", std::mem::size_of::<Check>());
}
