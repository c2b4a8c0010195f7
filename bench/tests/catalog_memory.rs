//! What the catalog itself keeps per instance, counted by the allocator rather than read off a
//! process's RSS: the same 10,000 registrations `shoal-bench catalog-scale` sends (1,000 services ×
//! 10 instances on 100 external nodes, one check each) applied to a bare [`State`], and, for
//! comparison, the same commands decoded (what the Raft log's mirror held per entry before it kept
//! entries encoded and bounded, `registry/src/store/log_store.rs`). A manager's RSS holds more: the
//! DNS snapshot, the log's newest entries, redb's cache and the allocator's slack.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use shoal_model::catalog::{CatalogCommand, Check, CheckDef, CheckSpec, Health, Instance, InstanceSpec, Weights};
use shoal_model::{Command, CommandResult, State};

/// Counts the bytes live on the heap. Only this test binary uses it.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes straight to the system allocator; the counter is only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counter is process-wide: tests that read it take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Instance `k` as `/v1/catalog/register` turns catalog-scale's body into a command.
fn register(k: usize) -> Command {
    let (s, j, n) = (k / 10, k % 10, k % 100);
    let id = format!("svc-{s:04}-{j}");
    let addr = format!("10.0.0.{}", n + 1);
    Command::Catalog(CatalogCommand::CatalogRegister {
        node: format!("sim-{n:03}"),
        address: addr.clone(),
        meta: BTreeMap::from([("rack".into(), format!("r{}", n % 10)), ("bench".into(), "catalog-scale".into())]),
        skip_node_update: false,
        service: Some(InstanceSpec {
            id: id.clone(),
            name: format!("svc-{s:04}"),
            tags: vec!["bench".into(), format!("v{}", k % 3)],
            address: addr,
            port: (20_000 + k) as u16,
            meta: BTreeMap::from([("version".into(), "1.0.0".into())]),
            weights: Weights::default(),
            enable_tag_override: false,
            task_id: None,
            container_id: None,
            checks: Vec::new(),
        }),
        check: Some((
            Some(id.clone()),
            CheckSpec {
                id: format!("{id}:alive"),
                name: "alive".into(),
                notes: String::new(),
                def: CheckDef::manual(),
                status: Health::Passing,
                output: String::new(),
            },
        )),
    })
}

const INSTANCES: usize = 10_000;

/// Heap bytes of the catalog state and of the same commands as log entries, per instance.
fn measure() -> (f64, f64) {
    let mut state = State::default();
    let before = live();
    for k in 0..INSTANCES {
        let r = state.apply(k as u64 + 1, &register(k));
        assert!(matches!(r, CommandResult::Applied(true)), "instance {k}: {r:?}");
    }
    let state_bytes = (live() - before) as f64;
    assert_eq!(state.catalog.services.len(), 1000);
    assert_eq!(state.catalog.external_nodes.len(), 100);

    let before = live();
    // What a decoded log entry of one registration costs (the mirror once held these).
    let log: Vec<Command> = (0..INSTANCES).map(|k| Command::Batch(vec![register(k)])).collect();
    let log_bytes = (live() - before) as f64;
    drop(log);
    (state_bytes / INSTANCES as f64, log_bytes / INSTANCES as f64)
}

/// Heap bytes of a map holding one entry: std's BTreeMap allocates a whole leaf (11 slots) for it.
fn one_entry_map<V>(v: V) -> isize {
    let before = live();
    let m = BTreeMap::from([(String::new(), v)]);
    let bytes = live() - before;
    drop(m);
    bytes
}

#[test]
fn catalog_heap_per_instance() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (per_instance, per_entry) = measure();
    println!(
        "catalog state: {per_instance:.0} B per instance; the same commands as log entries: {per_entry:.0} B each"
    );
    println!(
        "size_of Instance {} B, Check {} B; a one-entry BTreeMap<String, _> allocates: Instance {} B, Check {} B, String {} B",
        std::mem::size_of::<Instance>(),
        std::mem::size_of::<Check>(),
        one_entry_map(instance()),
        one_entry_map(check()),
        one_entry_map(String::new()),
    );
    assert!(per_instance > 0.0 && per_entry > 0.0);
}

/// The catalog's own tables, well under the goal of 1 KiB per instance for the whole
/// manager (bench/RESULTS.md, "Catalog at scale", has the manager's RSS, which holds more than
/// the tables: the DNS snapshot, the log's newest entries, redb's cache, the allocator's slack).
/// 7.0 KB before the layout of `model/src/catalog` changed (one-entry `BTreeMap`s, heap
/// `String`s), 766 B after; 582 B since instances are one shared `Arc` each in one sorted `Vec`
/// per service, manual check definitions take no room and an `Arc<Instance>` fits in 256 B.
#[test]
fn catalog_keeps_under_640_bytes_per_instance() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (per_instance, _) = measure();
    assert!(per_instance < 640.0, "the catalog keeps {per_instance:.0} B per instance");
}

/// Instance 0 as the catalog stores it.
fn instance() -> Instance {
    let mut state = State::default();
    state.apply(1, &register(0));
    state.catalog.instance("sim-000", "svc-0000-0").cloned().expect("registered")
}

/// Instance 0's check as the catalog stores it.
fn check() -> Check {
    instance().checks.into_values().next().expect("a check")
}
