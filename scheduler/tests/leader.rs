//! The leader loop against an in-memory registry (the `Registry` trait): it does nothing while its
//! node follows, reconciles as soon as it leads, reacts to writes through the watch (no polling),
//! and ends when the registry stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use shoal_model::services::{ServiceCommand, TaskState};
use shoal_model::{Command, CommandResult, Resources, Role, State};
use shoal_scheduler::leader::{Registry, run};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone, Copy, PartialEq)]
enum Leadership {
    Follower,
    Leader,
    Stopped,
}

struct MemRegistry {
    state: Mutex<State>,
    applied: watch::Sender<u64>,
    leadership: watch::Sender<Leadership>,
    writes: Mutex<usize>,
}

impl MemRegistry {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            applied: watch::Sender::new(0),
            leadership: watch::Sender::new(Leadership::Follower),
            writes: Mutex::new(0),
        })
    }

    /// Applies `cmd` at the next index, as a committed log entry would.
    fn apply(&self, cmd: &Command) -> CommandResult {
        let mut s = self.state.lock().unwrap();
        let index = s.index() + 1;
        let r = s.apply(index, cmd);
        drop(s);
        self.applied.send_replace(index);
        r
    }

    fn tasks(&self, state: TaskState) -> usize {
        self.state.lock().unwrap().services.tasks.values().filter(|t| t.status.state == state).count()
    }
}

impl Registry for MemRegistry {
    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap())
    }

    fn index(&self) -> u64 {
        *self.applied.borrow()
    }

    async fn wait_past(&self, index: u64, deadline: Instant) -> u64 {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|i| *i > index)).await;
        *self.applied.borrow()
    }

    fn is_leader(&self) -> bool {
        *self.leadership.borrow() == Leadership::Leader
    }

    async fn until_leader(&self) -> bool {
        let mut rx = self.leadership.subscribe();
        let l = rx.wait_for(|l| *l != Leadership::Follower).await.map(|l| *l);
        matches!(l, Ok(Leadership::Leader))
    }

    async fn write(&self, cmd: Command) -> Result<CommandResult, shoal_registry::Error> {
        if !self.is_leader() {
            return Err(shoal_registry::Error::NotLeader);
        }
        *self.writes.lock().unwrap() += 1;
        Ok(self.apply(&cmd))
    }
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn create(id: &str, name: &str, replicas: u64) -> Command {
    let spec = json!({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "i"}}, "Mode": {"Replicated": {"Replicas": replicas}}});
    Command::Service(ServiceCommand::Create {
        id: id.into(),
        name: name.into(),
        spec: spec.to_string(),
        at: "2026-12-01T00:00:00Z".into(),
    })
}

#[tokio::test]
async fn the_loop_waits_for_leadership_reacts_to_writes_and_ends_when_stopped() {
    let reg = MemRegistry::new();
    reg.apply(&Command::NodeUpsert {
        id: 1,
        name: "n1".into(),
        cluster_addr: "127.0.0.1:2377".into(),
        http_addr: "127.0.0.1:8500".into(),
        role: Role::Manager,
        resources: Resources { cpus: 2, memory_bytes: 1 << 30, engine_version: String::new() },
    });
    reg.apply(&create("s1", "web", 3));
    let handle = tokio::spawn(run(reg.clone()));

    // A follower writes nothing, however long it waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*reg.writes.lock().unwrap(), 0, "a follower must not reconcile");

    reg.leadership.send_replace(Leadership::Leader);
    until("3 tasks assigned once it leads", || reg.tasks(TaskState::Assigned) == 3).await;

    // A later write wakes it through the watch.
    reg.apply(&create("s2", "api", 2));
    until("the new service's 2 tasks", || reg.tasks(TaskState::Assigned) == 5).await;

    // Nothing changes: it sleeps on the watch instead of writing again.
    let writes = *reg.writes.lock().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*reg.writes.lock().unwrap(), writes, "no write without a change");

    // Losing leadership, then the registry stopping, ends the loop.
    reg.leadership.send_replace(Leadership::Follower);
    reg.apply(&Command::KvSet { key: "k".into(), value: vec![], flags: 0, cas: None });
    tokio::time::sleep(Duration::from_millis(100)).await;
    reg.leadership.send_replace(Leadership::Stopped);
    tokio::time::timeout(Duration::from_secs(5), handle).await.expect("the loop ends when stopped").unwrap();
}
