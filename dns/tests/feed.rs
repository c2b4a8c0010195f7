//! The feed with a fake source: it follows the index, keeps the last copy through an outage (one
//! warning), and recovers.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_dns::{Feed, SnapshotHandle, SnapshotSource};
use shoal_model::catalog::snapshot::{Snapshot, SnapshotNode};

/// Answers from a script, then blocks (as a real source does when nothing changes).
#[derive(Default)]
struct Scripted {
    steps: Mutex<VecDeque<Result<Snapshot, String>>>,
    /// The `index` of every call.
    calls: Mutex<Vec<u64>>,
}

#[async_trait]
impl SnapshotSource for Scripted {
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<Arc<Snapshot>, String> {
        self.calls.lock().unwrap().push(index);
        let next = self.steps.lock().unwrap().pop_front();
        match next {
            Some(step) => step.map(Arc::new),
            None => {
                tokio::time::sleep(wait).await;
                Err("script over".into())
            }
        }
    }
}

fn snap(index: u64) -> Snapshot {
    let mut s = Snapshot { index, ..Snapshot::default() };
    s.nodes.insert(format!("n{index}"), SnapshotNode { address: "10.0.0.1".into(), meta: Default::default() });
    s
}

/// Log lines, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_for(handle: &SnapshotHandle, index: u64) {
    let mut rx = handle.subscribe();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.index == index))
        .await
        .unwrap_or_else(|_| panic!("index {index} within 5 s, have {}", handle.index()))
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn keeps_the_last_copy_through_an_outage_and_recovers() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The current-thread runtime runs the feed on this thread, where this subscriber is the default.
    let _guard = tracing::subscriber::set_default(subscriber);

    let source = Arc::new(Scripted::default());
    source.steps.lock().unwrap().extend([
        Ok(snap(5)),
        Err("no manager answered".to_string()),
        Err("no manager answered".to_string()),
        Err("no manager answered".to_string()),
        Ok(snap(9)),
    ]);
    let handle = SnapshotHandle::default();
    let feed = Feed::new(source.clone(), handle.clone())
        .with_wait(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(5), Duration::from_millis(20));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(feed.run(async move {
        let _ = stopped.await;
    }));

    wait_for(&handle, 5).await;
    // Through the errors the copy stays; then the recovered source's newer one replaces it.
    wait_for(&handle, 9).await;
    assert!(handle.get().nodes.contains_key("n9"));
    let _ = stop.send(());
    task.await.unwrap();

    let calls = source.calls.lock().unwrap().clone();
    assert_eq!(&calls[..5], &[0, 5, 5, 5, 5], "each read asks for changes after the copy it has");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warned = text.matches("serving the last copy of the catalog (index 5) until a manager answers").count();
    assert_eq!(warned, 1, "one warning per outage:\n{text}");
    assert_eq!(text.matches("catalog feed recovered").count(), 1, "one line when it ends:\n{text}");
}

#[tokio::test]
async fn an_unchanged_index_keeps_the_copy() {
    let source = Arc::new(Scripted::default());
    let mut other = snap(4);
    other.nodes.clear();
    source.steps.lock().unwrap().extend([Ok(snap(4)), Ok(other)]);
    let handle = SnapshotHandle::default();
    let feed = Feed::new(source.clone(), handle.clone()).with_wait(Duration::from_secs(30));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(feed.run(async move {
        let _ = stopped.await;
    }));
    // The third read blocks: the second answer (same index) has been handled by then.
    tokio::time::timeout(Duration::from_secs(5), async {
        while source.calls.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("three reads");
    assert_eq!(source.calls.lock().unwrap().clone(), vec![0, 4, 4]);
    assert!(handle.get().nodes.contains_key("n4"), "the same index is not swapped in again");
    // Shutdown ends a blocked read at once.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(1), task).await.expect("stops at once").unwrap();
}
