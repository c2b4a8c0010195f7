//! What the runner has to write, and when: the newest result per check, compared with what the
//! catalog holds, batched, throttled and retried. Pure: the clock is passed in.
//!
//! - A result equal to the stored status and output is dropped: a check that keeps passing writes
//!   nothing, and no watcher wakes.
//! - A status change is sent within one batch window (the first change opens it; everything
//!   ready when it closes goes in the same write).
//! - An output-only change (same status, new output) is sent at most once per `output_every`
//!   per check (Consul's `check_update_interval`, 5 min), counted from this runner's last write of
//!   that check; until then only the newest output is kept. A check this runner never wrote yet
//!   (a new or restarted one) sends its first output at once.
//! - A failed write puts its results back (a newer result for the same check wins) and nothing is
//!   sent before `retry_at`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use shoal_model::catalog::{CheckUpdate, Health, truncate_output};

/// One write's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Check results (one `UpdateChecks`).
    pub updates: Vec<CheckUpdate>,
    /// Instances to deregister.
    pub deregister: Vec<String>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.deregister.is_empty()
    }
}

enum Ready {
    Now,
    At(Instant),
    Never,
}

pub(crate) struct Outbox {
    window: Duration,
    output_every: Duration,
    /// Status and output in the catalog, as last read (or written by this runner since).
    stored: HashMap<String, (Health, String)>,
    /// The newest result per check not written yet.
    pending: BTreeMap<String, (Health, String)>,
    /// When this runner last wrote each check.
    written_at: HashMap<String, Instant>,
    deregister: BTreeSet<String>,
    /// The open batch window's start.
    opened: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Outbox {
    pub(crate) fn new(window: Duration, output_every: Duration) -> Self {
        Outbox {
            window,
            output_every,
            stored: HashMap::new(),
            pending: BTreeMap::new(),
            written_at: HashMap::new(),
            deregister: BTreeSet::new(),
            opened: None,
            retry_at: None,
        }
    }

    /// What the catalog holds for a check (from the latest view).
    pub(crate) fn stored(&mut self, check_id: &str, status: Health, output: &str) {
        match self.stored.get_mut(check_id) {
            Some(s) if s.0 == status && s.1 == output => {}
            Some(s) => *s = (status, output.to_string()),
            None => {
                self.stored.insert(check_id.to_string(), (status, output.to_string()));
            }
        }
    }

    /// A check got a new definition: its pending result is stale and it counts as never written.
    pub(crate) fn restarted(&mut self, check_id: &str) {
        self.pending.remove(check_id);
        self.written_at.remove(check_id);
    }

    /// Forgets the checks that are not in `keep` (they left the catalog).
    pub(crate) fn retain(&mut self, keep: &std::collections::HashSet<String>) {
        self.stored.retain(|k, _| keep.contains(k));
        self.pending.retain(|k, _| keep.contains(k));
        self.written_at.retain(|k, _| keep.contains(k));
    }

    /// A check's newest result (it replaces any older one not written yet).
    pub(crate) fn push(&mut self, check_id: &str, status: Health, output: String) {
        self.pending.insert(check_id.to_string(), (status, truncate_output(output)));
    }

    /// An instance to deregister.
    pub(crate) fn deregister(&mut self, id: &str) {
        self.deregister.insert(id.to_string());
    }

    fn ready(&self, check_id: &str, result: &(Health, String), now: Instant) -> Ready {
        let Some(stored) = self.stored.get(check_id) else { return Ready::Never };
        if stored == result {
            Ready::Never
        } else if stored.0 != result.0 {
            Ready::Now
        } else {
            match self.written_at.get(check_id) {
                Some(t) if now < *t + self.output_every => Ready::At(*t + self.output_every),
                _ => Ready::Now,
            }
        }
    }

    /// When [`Outbox::take`] has something to send (`None`: nothing pending). Opens the batch
    /// window at `now` when something became ready to send.
    pub(crate) fn due(&mut self, now: Instant) -> Option<Instant> {
        let mut ready_now = !self.deregister.is_empty();
        let mut later: Option<Instant> = None;
        let mut stale = Vec::new();
        for (id, r) in &self.pending {
            match self.ready(id, r, now) {
                Ready::Now => ready_now = true,
                Ready::At(t) => later = Some(later.map_or(t, |l| l.min(t))),
                Ready::Never => stale.push(id.clone()),
            }
        }
        for id in stale {
            self.pending.remove(&id);
        }
        if !ready_now {
            self.opened = None;
        }
        let window = ready_now.then(|| *self.opened.get_or_insert(now) + self.window);
        let due = match (window, later) {
            (Some(w), Some(l)) => Some(w.min(l)),
            (w, l) => w.or(l),
        };
        due.map(|d| self.retry_at.map_or(d, |r| d.max(r)))
    }

    /// Everything ready to send at `now`, taken out; the batch window closes.
    pub(crate) fn take(&mut self, now: Instant) -> Batch {
        if self.retry_at.is_some_and(|r| now < r) {
            return Batch::default();
        }
        let ids: Vec<String> = self
            .pending
            .iter()
            .filter(|(id, r)| matches!(self.ready(id, r, now), Ready::Now))
            .map(|(id, _)| id.clone())
            .collect();
        let updates = ids
            .into_iter()
            .filter_map(|id| {
                let (status, output) = self.pending.remove(&id)?;
                Some(CheckUpdate { check_id: id, status, output, ttl_renewal: false })
            })
            .collect();
        self.opened = None;
        Batch { updates, deregister: std::mem::take(&mut self.deregister).into_iter().collect() }
    }

    /// `batch` was written at `now`: the catalog holds it now (until the next view says otherwise).
    pub(crate) fn written(&mut self, batch: &Batch, now: Instant) {
        self.retry_at = None;
        for u in &batch.updates {
            if let Some(s) = self.stored.get_mut(&u.check_id) {
                *s = (u.status, u.output.clone());
                self.written_at.insert(u.check_id.clone(), now);
            }
        }
    }

    /// Writing `batch` failed: it is sent again, not before `retry_at`, unless newer results
    /// replaced it.
    pub(crate) fn failed(&mut self, batch: Batch, retry_at: Instant) {
        for u in batch.updates {
            self.pending.entry(u.check_id).or_insert((u.status, u.output));
        }
        self.deregister.extend(batch.deregister);
        self.retry_at = Some(retry_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Critical, Passing};

    const WINDOW: Duration = Duration::from_millis(20);
    const EVERY: Duration = Duration::from_secs(300);

    fn outbox() -> Outbox {
        let mut o = Outbox::new(WINDOW, EVERY);
        o.stored("a", Critical, "");
        o.stored("b", Critical, "");
        o
    }

    fn ids(b: &Batch) -> Vec<(&str, Health, &str)> {
        b.updates.iter().map(|u| (u.check_id.as_str(), u.status, u.output.as_str())).collect()
    }

    #[test]
    fn a_result_equal_to_the_stored_one_is_dropped() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Critical, String::new());
        assert_eq!(o.due(t0), None);
        assert!(o.take(t0).is_empty());
    }

    #[test]
    fn changes_within_the_window_go_in_one_batch() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Passing, "ok".into());
        assert_eq!(o.due(t0), Some(t0 + WINDOW), "the first change opens the window");
        o.push("b", Passing, "ok".into());
        assert_eq!(o.due(t0 + Duration::from_millis(5)), Some(t0 + WINDOW), "a later one does not move it");
        let b = o.take(t0 + WINDOW);
        assert_eq!(ids(&b), vec![("a", Passing, "ok"), ("b", Passing, "ok")]);
        assert_eq!(o.due(t0 + WINDOW), None);
    }

    #[test]
    fn the_newest_result_wins() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Passing, "1".into());
        o.push("a", Critical, "2".into());
        assert_eq!(ids(&o.take(t0)), vec![("a", Critical, "2")]);
        o.push("a", Passing, "3".into());
        o.push("a", Critical, "".into());
        assert_eq!(o.due(t0), None, "back to what is stored: nothing to write");
    }

    #[test]
    fn output_only_changes_wait_for_the_update_interval() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Critical, "first output".into());
        let b = o.take(t0);
        assert_eq!(ids(&b), vec![("a", Critical, "first output")], "never written: at once");
        o.written(&b, t0);
        o.push("a", Critical, "second".into());
        o.push("a", Critical, "third".into());
        assert_eq!(o.due(t0 + WINDOW), Some(t0 + EVERY));
        assert!(o.take(t0 + WINDOW).is_empty());
        o.push("a", Passing, "a status change".into());
        let at = t0 + Duration::from_secs(1);
        assert_eq!(o.due(at), Some(at + WINDOW), "a status change is not throttled");
        let b = o.take(at + WINDOW);
        o.written(&b, at + WINDOW);
        o.push("a", Passing, "newer".into());
        assert_eq!(o.due(at + WINDOW), Some(at + WINDOW + EVERY), "counted from the last write");
        assert_eq!(ids(&o.take(at + WINDOW + EVERY)), vec![("a", Passing, "newer")]);
    }

    #[test]
    fn a_restarted_check_writes_its_output_at_once() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Critical, "x".into());
        let b = o.take(t0);
        o.written(&b, t0);
        o.restarted("a");
        o.stored("a", Critical, "");
        o.push("a", Critical, "y".into());
        assert_eq!(o.due(t0), Some(t0 + WINDOW));
    }

    #[test]
    fn a_failed_write_is_retried_after_the_backoff_and_newer_results_win() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Passing, "1".into());
        o.push("b", Passing, "1".into());
        o.deregister("web-1");
        let b = o.take(t0);
        o.push("a", Critical, "newer".into());
        let retry = t0 + Duration::from_secs(1);
        o.failed(b, retry);
        assert_eq!(o.due(t0), Some(retry));
        assert!(o.take(t0).is_empty(), "not before the backoff");
        let b = o.take(retry);
        assert_eq!(ids(&b), vec![("a", Critical, "newer"), ("b", Passing, "1")]);
        assert_eq!(b.deregister, vec!["web-1".to_string()]);
    }

    #[test]
    fn forgotten_checks_write_nothing() {
        let t0 = Instant::now();
        let mut o = outbox();
        o.push("a", Passing, "ok".into());
        o.retain(&["b".to_string()].into_iter().collect());
        assert_eq!(o.due(t0), None);
        o.push("gone", Passing, "ok".into());
        assert_eq!(o.due(t0), None, "a check the catalog does not hold");
    }
}
