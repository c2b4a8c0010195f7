//! The runner against a scripted source and a counting reloader: bursts fold into few passes,
//! KV reads are fetched and watched, template edits re-render, and every failure (a template
//! that does not parse, a missing file, a refused check, an unwritable destination, a failed
//! reload) leaves the last good config in place and shows on the status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use shoal_api::edge::EdgeSnapshot;
use shoal_router::reload::{ReloadError, Reloader};
use shoal_router::runner::{Options, Router};
use shoal_router::source::{Source, SourceError};
use shoal_router::template::{Job, TemplateSpec};
use tokio::sync::watch;

/// A catalog of one service `web` with `n` passing instances at `index`.
fn snapshot(index: u64, n: usize) -> EdgeSnapshot {
    let instances: Vec<_> = (1..=n)
        .map(|k| {
            json!({"id": format!("web.{k}"), "node": "n1", "address": format!("10.0.0.{k}"), "own_address": true,
                   "port": 8080, "tags": [], "meta": {}, "health": "passing", "weights": {"passing": 1, "warning": 1}})
        })
        .collect();
    serde_json::from_value(json!({
        "index": index,
        "catalog": {"index": index, "services": {"web": instances}, "service_indexes": {}, "nodes": {}},
        "service_labels": {}
    }))
    .unwrap()
}

struct Scripted {
    catalog: watch::Sender<EdgeSnapshot>,
    kv: Mutex<std::collections::BTreeMap<String, String>>,
    kv_index: watch::Sender<u64>,
    snapshot_reads: AtomicU64,
}

impl Scripted {
    fn new() -> Arc<Scripted> {
        Arc::new(Scripted {
            catalog: watch::channel(snapshot(1, 1)).0,
            kv: Mutex::default(),
            kv_index: watch::channel(1).0,
            snapshot_reads: AtomicU64::new(0),
        })
    }

    fn set(&self, index: u64, n: usize) {
        self.catalog.send_replace(snapshot(index, n));
    }

    fn put(&self, k: &str, v: &str) {
        self.kv.lock().unwrap().insert(k.into(), v.into());
        self.kv_index.send_modify(|i| *i += 1);
    }
}

#[async_trait]
impl Source for Scripted {
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<EdgeSnapshot, SourceError> {
        self.snapshot_reads.fetch_add(1, Ordering::Relaxed);
        let mut rx = self.catalog.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.index != index)).await;
        Ok(rx.borrow().clone())
    }
    async fn kv_index(&self, index: u64, wait: Duration) -> Result<u64, SourceError> {
        let mut rx = self.kv_index.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i != index)).await;
        Ok(*rx.borrow())
    }
    async fn kv_get(&self, key: &str) -> Result<Option<String>, SourceError> {
        Ok(self.kv.lock().unwrap().get(key).cloned())
    }
    async fn kv_tree(&self, prefix: &str) -> Result<Vec<(String, String)>, SourceError> {
        Ok(self
            .kv
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Counts reloads; fails while `fail` is set.
#[derive(Default)]
struct Counting {
    reloads: AtomicU64,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Reloader for Counting {
    fn describe(&self) -> String {
        "counting".into()
    }
    async fn reload(&self) -> Result<(), ReloadError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(ReloadError::Refused { what: "counting".into(), detail: "told to fail".into() });
        }
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const TEMPLATE: &str =
    "{% for i in services.web %}{{ i.address }}\n{% endfor %}max={{ kv('cfg/max') | default('none', true) }}\n";

#[tokio::test]
async fn bursts_fold_kv_is_watched_and_failures_keep_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("t.j2"), dir.path().join("out.cfg"));
    std::fs::write(&src, TEMPLATE).unwrap();
    let source = Scripted::new();
    let reloader = Arc::new(Counting::default());
    let spec = TemplateSpec { source: src.clone(), dest: dest.clone(), command: None };
    let job = Job::new(spec, Some("grep -q max= {}".into()), Some(reloader.clone()));
    let opts = Options { wait: (Duration::from_millis(100), Duration::from_millis(400)), domain: "shoal".into() };
    let router = Router::new(source.clone(), vec![(job, None)], opts, Arc::new(|_: &str| None));
    let status = router.status();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(router.run(async move {
        let _ = stop_rx.await;
    }));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();

    eventually("the first render", || read(&dest) == "10.0.0.1\nmax=none\n").await;
    assert_eq!(reloader.reloads.load(Ordering::Relaxed), 1);

    // 100 changes in 1 s: the window folds them into a handful of passes (≤ one per MAX).
    let passes_before = status.lock().unwrap().passes;
    for k in 0..100u64 {
        source.set(10 + k, 1 + (k as usize % 5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    source.set(200, 2);
    eventually("the last state", || read(&dest) == "10.0.0.1\n10.0.0.2\nmax=none\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let passes = status.lock().unwrap().passes - passes_before;
    let reloads = reloader.reloads.load(Ordering::Relaxed) - 1;
    println!("100 changes in ~1 s: {passes} passes, {reloads} reloads");
    assert!((1..=6).contains(&passes), "{passes} passes for 100 changes in 1 s");
    assert!(reloads <= passes, "{reloads} reloads");

    // A KV key the template reads is fetched, and its change re-renders.
    source.put("cfg/max", "64");
    eventually("the KV value", || read(&dest).ends_with("max=64\n")).await;

    // Failures: each keeps the last good file and shows on the status; the next good pass clears it.
    let good = read(&dest);
    type BreakIt<'a> = Box<dyn Fn() + 'a>;
    let fails: Vec<(&str, BreakIt)> = vec![
        ("render", Box::new(|| std::fs::write(&src, "{% for %}\n").unwrap())),
        ("check", Box::new(|| std::fs::write(&src, "no marker here\n").unwrap())),
        ("read", Box::new(|| std::fs::remove_file(&src).unwrap())),
    ];
    for (kind, break_it) in fails {
        break_it();
        eventually(kind, || status.lock().unwrap().templates[0].error.as_deref().is_some_and(|e| e.starts_with(kind)))
            .await;
        assert_eq!(read(&dest), good, "{kind}: the last good config stays");
        std::fs::write(&src, TEMPLATE).unwrap();
        source.put("cfg/other", "x");
        eventually("recovery", || status.lock().unwrap().templates[0].error.is_none()).await;
    }

    // A failed reload puts the previous file back.
    reloader.fail.store(true, Ordering::Relaxed);
    source.set(300, 3);
    eventually("reload failure", || {
        status.lock().unwrap().templates[0].error.as_deref().is_some_and(|e| e.starts_with("reload"))
    })
    .await;
    assert_eq!(read(&dest), good, "the proxy runs the old config, and so does the file");
    reloader.fail.store(false, Ordering::Relaxed);
    source.set(301, 3);
    eventually("the reload after", || read(&dest).starts_with("10.0.0.1\n10.0.0.2\n10.0.0.3\n")).await;

    let _ = stop_tx.send(());
    run.await.unwrap();
}

#[tokio::test]
async fn an_unwritable_destination_is_reported_and_once_exits_with_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("t.j2");
    std::fs::write(&src, "x\n").unwrap();
    let source = Scripted::new();
    let spec = TemplateSpec { source: src, dest: dir.path().join("missing-dir/out.cfg"), command: None };
    let mut router =
        Router::new(source, vec![(Job::new(spec, None, None), None)], Options::default(), Arc::new(|_: &str| None));
    let errors = router.once().await.unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("write") && errors[0].contains("missing-dir"), "{errors:?}");
}

#[tokio::test]
async fn an_edited_template_is_rendered_again_with_no_catalog_change() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("t.j2"), dir.path().join("out.cfg"));
    std::fs::write(&src, "v1 {{ services.web | length }}\n").unwrap();
    let source = Scripted::new();
    let spec = TemplateSpec { source: src.clone(), dest: dest.clone(), command: None };
    let router = Router::new(
        source.clone(),
        vec![(Job::new(spec, None, None), None)],
        Options::default(),
        Arc::new(|_: &str| None),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(router.run(async move {
        let _ = stop_rx.await;
    }));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the first render", || read(&dest) == "v1 1\n").await;
    let reads = source.snapshot_reads.load(Ordering::Relaxed);
    // An editor's save: a new file renamed over the old one.
    let tmp = dir.path().join(".t.j2.swp");
    std::fs::write(&tmp, "v2 {{ services.web | length }}\n").unwrap();
    std::fs::rename(&tmp, &src).unwrap();
    eventually("the edit rendered", || read(&dest) == "v2 1\n").await;
    // In place, too.
    std::fs::write(&src, "v3\n").unwrap();
    eventually("the in-place edit rendered", || read(&dest) == "v3\n").await;
    assert!(source.snapshot_reads.load(Ordering::Relaxed) <= reads + 1, "no catalog read was needed");
    let _ = stop_tx.send(());
    run.await.unwrap();
}
