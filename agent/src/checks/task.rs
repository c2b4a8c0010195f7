//! One task per running check: a probe loop (HTTP, TCP, exec) or a TTL timer. Each sends its
//! results to the runner tagged with the generation it was started as, so a result of a task
//! that was just replaced (new definition) is recognised and dropped.

use std::sync::Arc;
use std::time::Duration;

use shoal_model::catalog::{Check, CheckDef, CheckKind, Health};
use tokio::sync::{mpsc, watch};

use super::probe::{self, ContainerExec, HttpClients, Probed};
use super::status::{Counters, Thresholds};

/// A result to write, from check `check_id`'s task number `generation`.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub check_id: String,
    pub generation: u64,
    pub status: Health,
    pub output: String,
}

pub(crate) type Outcomes = mpsc::UnboundedSender<Outcome>;

/// What a check's task runs: its definition and, for an exec check, the container it resolves to
/// (the instance's own when the definition names none). A change of either restarts the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    pub def: CheckDef,
    pub container: Option<String>,
}

/// What a TTL timer watches of its stored check: any change restarts the timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub status: Health,
    pub output: String,
    pub renewals: u64,
}

impl Stored {
    pub(crate) fn of(c: &Check) -> Self {
        Stored { status: c.status, output: c.output.to_string(), renewals: c.renewals }
    }
}

/// The probing means every check task shares.
pub(crate) struct Probes {
    pub http: HttpClients,
    pub exec: Option<Arc<dyn ContainerExec>>,
}

impl Probes {
    async fn run(&self, spec: &Spec, timeout: Duration) -> Probed {
        match &spec.def.kind {
            CheckKind::Http { url, method, headers, tls_skip_verify } => {
                self.http.probe(method, url, headers, *tls_skip_verify, timeout).await
            }
            CheckKind::Tcp { addr } => probe::tcp(addr, timeout).await,
            CheckKind::Exec { args, .. } => {
                probe::exec(self.exec.as_deref(), spec.container.as_deref(), args, timeout).await
            }
            other => {
                Probed { status: Health::Critical, output: format!("a {} check is not probed", other.type_name()) }
            }
        }
    }
}

/// Until a check first passes, it is probed this often (for at most [`STARTING_FOR`], never more
/// often than its interval): a container's check is registered before its process listens, and
/// waiting a whole interval (10 s by default) after that first refusal would keep a healthy new
/// instance out of rotation for nothing. A refused connect costs next to nothing.
const FIRST_RETRY: Duration = Duration::from_millis(25);
/// See [`FIRST_RETRY`].
const STARTING_FOR: Duration = Duration::from_secs(3);

/// Probes every interval (the first at once, then quickly until it first passes) and sends what
/// the counters let through.
pub(crate) async fn probe_loop(check_id: String, generation: u64, spec: Spec, probes: Arc<Probes>, out: Outcomes) {
    let interval = match spec.def.interval_ms {
        0 => Duration::from_secs(10), // Refused by validation; never a busy loop.
        ms => Duration::from_millis(ms),
    };
    let timeout = probe::timeout_of(&spec.def);
    let mut counters = Counters::new(Thresholds::of(&spec.def));
    let started = tokio::time::Instant::now();
    let mut starting = Some(FIRST_RETRY);
    let mut tick = tokio::time::interval(interval);
    // A probe that took long does not make the next ones run back to back.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        match starting {
            Some(wait) if wait < interval && !first => {
                tokio::time::sleep(wait).await;
                tick.reset();
            }
            _ => {
                tick.tick().await;
            }
        }
        first = false;
        let Probed { status, output } = probes.run(&spec, timeout).await;
        tracing::trace!(check_id = %check_id, status = status.as_str(), "check probed");
        if status == Health::Passing || started.elapsed() > STARTING_FOR {
            starting = None;
        }
        let Some(status) = counters.record(status) else { continue };
        if out.send(Outcome { check_id: check_id.clone(), generation, status, output }).is_err() {
            return;
        }
    }
}

/// What an expired TTL check's output becomes (Consul's texts).
pub(crate) fn expired_output(last_output: &str) -> String {
    if last_output.is_empty() {
        "TTL expired".to_string()
    } else {
        format!("TTL expired (last output before timeout follows): {last_output}")
    }
}

/// A TTL check's timer: it starts now, restarts on every change of the stored check (a client's
/// update, counted by `renewals` even when nothing else changed), and when it runs out the check
/// turns critical. After that it waits for a client's update before it runs again; the runner's
/// own expiry write does not restart it.
pub(crate) async fn ttl_loop(
    check_id: String,
    generation: u64,
    ttl: Duration,
    mut stored: watch::Receiver<Stored>,
    out: Outcomes,
) {
    loop {
        stored.borrow_and_update();
        match tokio::time::timeout(ttl, stored.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return, // The runner forgot the check.
            Err(_) => {}
        }
        let last = stored.borrow_and_update().clone();
        // Already expired (e.g. before an agent restart): its output stays as it is.
        let expired = if last.status == Health::Critical && last.output.starts_with("TTL expired") {
            last.output.clone()
        } else {
            let output = expired_output(&last.output);
            tracing::warn!(check_id = %check_id, "check missed its TTL, is now critical");
            let o =
                Outcome { check_id: check_id.clone(), generation, status: Health::Critical, output: output.clone() };
            if out.send(o).is_err() {
                return;
            }
            output
        };
        loop {
            if stored.changed().await.is_err() {
                return;
            }
            let now = stored.borrow_and_update();
            let ours = now.status == Health::Critical && now.output == expired && now.renewals == last.renewals;
            if !ours {
                break;
            }
        }
    }
}
