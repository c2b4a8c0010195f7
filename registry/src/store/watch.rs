//! The one watch mechanism: "give me state at index > N, or wait up to W".
//!
//! The state machine publishes its applied index on a `tokio::sync::watch` channel after every
//! applied batch. A reader computes its own view and that view's index (a key's `ModifyIndex`, a
//! table's index, ...); if the view's index is not past `N` it sleeps on the channel until the applied
//! index moves, recomputes, and repeats until its deadline. No polling: a waiter wakes only when
//! something was applied. HTTP blocking queries use it now; agents, DNS, routers and the CLI later.

use tokio::sync::watch;
use tokio::time::Instant;

/// A cloneable subscription to the registry's applied index.
#[derive(Clone)]
pub struct IndexWatch {
    rx: watch::Receiver<u64>,
}

impl IndexWatch {
    pub(crate) fn new(rx: watch::Receiver<u64>) -> Self {
        Self { rx }
    }

    /// The applied index now.
    pub fn index(&self) -> u64 {
        *self.rx.borrow()
    }

    /// Waits until the applied index is greater than `index` or `deadline` passes; returns the
    /// applied index at that moment.
    pub async fn wait_past(&self, index: u64, deadline: Instant) -> u64 {
        let mut rx = self.rx.clone();
        match tokio::time::timeout_at(deadline, rx.wait_for(|i| *i > index)).await {
            Ok(Ok(v)) => *v,
            _ => *self.rx.borrow(),
        }
    }

    /// Waits until the applied index is at least `index`; `false` if `deadline` passed first.
    pub async fn wait_at_least(&self, index: u64, deadline: Instant) -> bool {
        index == 0 || self.wait_past(index - 1, deadline).await >= index
    }

    /// A blocking query: runs `view` (which returns the view's index and its value) until the view's
    /// index is greater than `min_index` or `deadline` passes, re-running it only when something new
    /// was applied. Returns the last result; on timeout that is the current value with its index.
    pub async fn query<T>(&self, min_index: u64, deadline: Instant, mut view: impl FnMut() -> (u64, T)) -> (u64, T) {
        loop {
            // Read the applied index before the view, so a write landing in between wakes us.
            let seen = self.index();
            let (index, value) = view();
            if index > min_index || Instant::now() >= deadline {
                return (index, value);
            }
            if self.wait_past(seen, deadline).await <= seen {
                return view();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn query_returns_at_once_when_past() {
        let (_tx, rx) = watch::channel(5u64);
        let w = IndexWatch::new(rx);
        let (i, v) = w.query(3, Instant::now() + Duration::from_secs(5), || (5, "x")).await;
        assert_eq!((i, v), (5, "x"));
    }

    #[tokio::test]
    async fn query_wakes_on_change_and_times_out_with_same_index() {
        let (tx, rx) = watch::channel(5u64);
        let w = IndexWatch::new(rx);
        let start = Instant::now();
        let (i, _) = w.query(5, start + Duration::from_millis(150), || (5, ())).await;
        assert_eq!(i, 5);
        assert!(start.elapsed() >= Duration::from_millis(150), "waited to the deadline");

        let w2 = w.clone();
        let task = tokio::spawn(async move {
            w2.query(5, Instant::now() + Duration::from_secs(10), || (*w2.rx.borrow(), ())).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        tx.send_replace(6);
        let (i, _) = task.await.unwrap();
        assert_eq!(i, 6);
        assert!(t0.elapsed() < Duration::from_millis(100), "woke promptly");
    }

    #[tokio::test]
    async fn unrelated_changes_do_not_end_the_wait() {
        let (tx, rx) = watch::channel(1u64);
        let w = IndexWatch::new(rx);
        let start = Instant::now();
        let bump = tokio::spawn(async move {
            for i in 2..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send_replace(i);
            }
            tx
        });
        // The view's own index stays at 1 whatever the applied index does.
        let (i, _) = w.query(1, start + Duration::from_millis(200), || (1, ())).await;
        assert_eq!(i, 1);
        assert!(start.elapsed() >= Duration::from_millis(200));
        drop(bump.await.unwrap());
    }
}
