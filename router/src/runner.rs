//! The router's loop: one blocking watch on the catalog (and one on the KV store once a template
//! reads it), template files watched for edits, and bursts of changes folded into one pass by a
//! quiescence window (`--wait MIN:MAX`, consul-template's rule: render once nothing changed for
//! MIN, and at the latest MAX after the first change).
//!
//! ```text
//!  catalog watch ──┐
//!  KV watch ───────┼─▶ events ─▶ quiet for MIN (≤ MAX) ─▶ pass: render all ─▶ KV they read fetched,
//!  template edits ─┘                                          re-rendered ─▶ install + reload each
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::reload::{ReloadError, Reloader};
use crate::source::Source;
use crate::template::{Job, Outcome, TemplateError, TemplateStatus};
use crate::view::View;

/// Starts a supervised proxy on a config file that now exists (`shoal router --exec`).
pub type Starter =
    Box<dyn Fn(PathBuf) -> Pin<Box<dyn Future<Output = Result<Arc<dyn Reloader>, ReloadError>> + Send>> + Send + Sync>;

/// How templates read the environment (`env(name)`).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How long a blocking read waits before it is re-issued.
const WATCH_WAIT: Duration = Duration::from_secs(60);
/// The pause after a failed read.
const RETRY: Duration = Duration::from_secs(1);

/// The router's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The quiescence window: (min, max).
    pub wait: (Duration, Duration),
    /// The DNS domain templates route `NAME.<domain>` under.
    pub domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { wait: (Duration::from_millis(50), Duration::from_millis(500)), domain: "shoal".into() }
    }
}

/// What the status page shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouterStatus {
    /// The catalog index of the newest copy.
    pub index: u64,
    /// Passes made.
    pub passes: u64,
    /// The last failed read of the catalog or KV, if the newest read failed.
    pub source_error: Option<String>,
    /// Every template.
    pub templates: Vec<TemplateStatus>,
}

impl RouterStatus {
    /// Whether every template's last pass succeeded.
    pub fn healthy(&self) -> bool {
        self.templates.iter().all(|t| t.error.is_none())
    }
}

enum Event {
    Catalog(Box<shoal_api::edge::EdgeSnapshot>),
    Kv,
    Template(PathBuf),
}

/// The router: templates, where their data comes from, and their status.
pub struct Router {
    source: Arc<dyn Source>,
    jobs: Vec<(Job, Option<Starter>)>,
    opts: Options,
    view: View,
    env: EnvLookup,
    status: Arc<Mutex<RouterStatus>>,
}

impl Router {
    /// A router over `jobs` (each with the starter of its supervised proxy, if any).
    pub fn new(source: Arc<dyn Source>, jobs: Vec<(Job, Option<Starter>)>, opts: Options, env: EnvLookup) -> Router {
        let view = View { domain: opts.domain.clone(), ..View::default() };
        Router { source, jobs, opts, view, env, status: Arc::default() }
    }

    /// The status the router keeps current (for the status endpoint).
    pub fn status(&self) -> Arc<Mutex<RouterStatus>> {
        self.status.clone()
    }

    /// One pass over every template with the current copy; returns the failures.
    pub async fn pass(&mut self) -> Vec<String> {
        // Render everything first; a render that read KV entries not fetched yet is redone once
        // they are (a handful of rounds at most: each round can only add reads).
        let mut rendered: Vec<Result<crate::render::Rendered, TemplateError>> = Vec::new();
        for _round in 0..8 {
            rendered = self.jobs.iter_mut().map(|(j, _)| j.render(&self.view, &*self.env)).collect();
            let missing: Vec<crate::render::Deps> =
                self.jobs.iter().map(|(j, _)| j.deps.clone()).filter(|d| !d.satisfied_by(&self.view)).collect();
            if missing.is_empty() {
                break;
            }
            for d in missing {
                self.fetch_kv(&d.keys.into_iter().collect::<Vec<_>>(), &d.prefixes.into_iter().collect::<Vec<_>>())
                    .await;
            }
        }
        let mut failures = Vec::new();
        let index = self.view.index;
        for ((job, starter), r) in self.jobs.iter_mut().zip(rendered) {
            let outcome = job.apply(index, r).await;
            if let Outcome::Failed(e) = &outcome {
                failures.push(format!("{}: {}: {e}", job.spec.source.display(), e.kind()));
                continue;
            }
            if job.reloader.is_none()
                && let Some(start) = starter
            {
                match start(job.spec.dest.clone()).await {
                    Ok(r) => {
                        tracing::info!(proxy = %r.describe(), config = %job.spec.dest.display(), "proxy started");
                        job.status.reloader = Some(r.describe());
                        job.reloader = Some(r);
                    }
                    Err(e) => {
                        job.status.failures += 1;
                        job.status.error = Some(format!("start: {e}"));
                        failures.push(format!("{}: start: {e}", job.spec.source.display()));
                    }
                }
            }
        }
        let mut st = self.status.lock().expect("status");
        st.index = index;
        st.passes += 1;
        st.templates = self.jobs.iter().map(|(j, _)| j.status.clone()).collect();
        failures
    }

    /// Reads the catalog once (no waiting) and makes one pass: `shoal router --once`.
    pub async fn once(&mut self) -> Result<(), Vec<String>> {
        let snap =
            self.source.snapshot(0, Duration::ZERO).await.map_err(|e| vec![format!("reading the catalog: {e}")])?;
        self.set_snapshot(&snap);
        let failures = self.pass().await;
        if failures.is_empty() { Ok(()) } else { Err(failures) }
    }

    fn set_snapshot(&mut self, snap: &shoal_api::edge::EdgeSnapshot) {
        let mut next = View::from_snapshot(snap, &self.opts.domain);
        next.kv = std::mem::take(&mut self.view.kv);
        next.kv_trees = std::mem::take(&mut self.view.kv_trees);
        self.view = next;
    }

    async fn fetch_kv(&mut self, keys: &[String], prefixes: &[String]) {
        for k in keys {
            match self.source.kv_get(k).await {
                Ok(v) => {
                    self.view.kv.insert(k.clone(), v);
                }
                Err(e) => self.source_failed("kv", &e.to_string()),
            }
        }
        for p in prefixes {
            match self.source.kv_tree(p).await {
                Ok(v) => {
                    self.view.kv_trees.insert(p.clone(), v);
                }
                Err(e) => self.source_failed("kv", &e.to_string()),
            }
        }
    }

    fn source_failed(&self, what: &str, e: &str) {
        tracing::warn!(error = %e, "reading the {what} failed; rendering from the last copy");
        self.status.lock().expect("status").source_error = Some(format!("{what}: {e}"));
    }

    /// Runs until `shutdown`, then stops the proxies it started.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (tx, mut rx) = mpsc::channel::<Event>(1024);
        // The first copy: wait for it (a router with nothing to render from renders nothing).
        let first = loop {
            tokio::select! {
                _ = &mut shutdown => return self.stop().await,
                r = self.source.snapshot(0, Duration::ZERO) => match r {
                    Ok(s) => break s,
                    Err(e) => { self.source_failed("catalog", &e.to_string()); tokio::time::sleep(RETRY).await; }
                },
            }
        };
        self.status.lock().expect("status").source_error = None;
        self.set_snapshot(&first);
        self.pass().await;

        let mut watchers = tokio::task::JoinSet::new();
        watchers.spawn(watch_catalog(self.source.clone(), first.index, tx.clone()));
        let mut kv_watch = false;
        let _files = watch_files(self.jobs.iter().map(|(j, _)| j.spec.source.clone()).collect(), tx.clone());
        loop {
            if !kv_watch && self.jobs.iter().any(|(j, _)| !j.deps.keys.is_empty() || !j.deps.prefixes.is_empty()) {
                kv_watch = true;
                watchers.spawn(watch_kv(self.source.clone(), tx.clone()));
            }
            let first = tokio::select! {
                _ = &mut shutdown => break,
                e = rx.recv() => match e { Some(e) => e, None => break },
            };
            let (mut snap, mut kv_changed) = (None, false);
            let mut absorb = |e: Event| match e {
                Event::Catalog(s) => snap = Some(s),
                Event::Kv => kv_changed = true,
                Event::Template(p) => tracing::info!(template = %p.display(), "template edited"),
            };
            absorb(first);
            let start = Instant::now();
            let (min, max) = self.opts.wait;
            let mut deadline = (start + min).min(start + max);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    e = rx.recv() => match e {
                        Some(e) => { absorb(e); deadline = (Instant::now() + min).min(start + max); }
                        None => break,
                    },
                }
            }
            if let Some(s) = snap {
                self.status.lock().expect("status").source_error = None;
                self.set_snapshot(&s);
            }
            if kv_changed {
                let keys: Vec<String> = self.view.kv.keys().cloned().collect();
                let prefixes: Vec<String> = self.view.kv_trees.keys().cloned().collect();
                self.fetch_kv(&keys, &prefixes).await;
            }
            self.pass().await;
        }
        watchers.abort_all();
        self.stop().await;
    }

    async fn stop(&self) {
        for (j, _) in &self.jobs {
            if let Some(r) = &j.reloader {
                r.stop().await;
            }
        }
    }
}

async fn watch_catalog(source: Arc<dyn Source>, mut index: u64, tx: mpsc::Sender<Event>) {
    let mut failing = false;
    loop {
        match source.snapshot(index, WATCH_WAIT).await {
            Ok(s) => {
                if failing {
                    tracing::info!(index = s.index, "the catalog answers again");
                    failing = false;
                }
                // An index that went backwards (a restored or new cluster) starts over from 0.
                let next = if s.index < index { 0 } else { s.index };
                if s.index != index && tx.send(Event::Catalog(Box::new(s))).await.is_err() {
                    return;
                }
                index = next;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "the catalog watch failed; the configs stay as they are until it answers");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn watch_kv(source: Arc<dyn Source>, tx: mpsc::Sender<Event>) {
    let mut index = source.kv_index(0, Duration::ZERO).await.unwrap_or_default();
    loop {
        match source.kv_index(index, WATCH_WAIT).await {
            Ok(i) if i != index => {
                index = if i < index { 0 } else { i };
                if tx.send(Event::Kv).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the KV watch failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Watches the templates' directories (editors replace a file by renaming over it), sending an
/// event for changes to the templates themselves. The watcher lives as long as the returned value.
fn watch_files(paths: Vec<PathBuf>, tx: mpsc::Sender<Event>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let abs: Vec<PathBuf> = paths.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
    let wanted = abs.clone();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        for p in ev.paths {
            if wanted.contains(&p) {
                let _ = tx.blocking_send(Event::Template(p));
            }
        }
    })
    .map_err(
        |e| tracing::warn!(error = %e, "cannot watch the template files; edits are seen on the next catalog change"),
    )
    .ok()?;
    let mut dirs: Vec<PathBuf> = abs.iter().filter_map(|p| p.parent().map(|d| d.to_path_buf())).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = w.watch(&d, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch a template directory");
        }
    }
    Some(w)
}
