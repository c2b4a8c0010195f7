//! The registrator's loop against a fake container source and the in-memory catalog.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use shoal_model::catalog::{CheckKind, Health, Instance};
use shoal_model::node::{Resources, Role};
use shoal_model::services::{NewTask, ServiceCommand, TaskState};
use shoal_model::{Command, State};
use shoal_registry::Error;
use shoal_registry::control::catalog::NodeCatalog;

use super::*;
use crate::docker::labels;
use crate::link::MemoryCatalog;

const NODE_ID: u64 = 0xaa;

fn node() -> NodeFacts {
    NodeFacts { id: format!("{NODE_ID:016x}"), name: "n1".into(), address: "10.0.0.5".into(), register_others: true }
}

/// A catalog with node n1 (ours), service web with tasks t1, t2 on it (t2 told to shut down).
fn catalog() -> MemoryCatalog {
    let mut s = State::default();
    s.apply(
        1,
        &Command::NodeUpsert {
            id: NODE_ID,
            name: "n1".into(),
            cluster_addr: "10.0.0.5:2377".into(),
            http_addr: "10.0.0.5:8500".into(),
            role: Role::Manager,
            resources: Resources::default(),
        },
    );
    s.apply(
        2,
        &Command::Service(ServiceCommand::Create {
            id: "s1".into(),
            name: "web".into(),
            spec: "{}".into(),
            at: "t".into(),
        }),
    );
    let task = |id: &str, slot| NewTask {
        id: id.into(),
        service_id: "s1".into(),
        slot,
        node_id: Some(NODE_ID),
        spec_version: 1,
        desired: TaskState::Running,
    };
    s.apply(
        3,
        &Command::Service(ServiceCommand::CreateTasks { tasks: vec![task("t1", 1), task("t2", 2)], at: "t".into() }),
    );
    s.apply(4, &Command::Service(ServiceCommand::SetDesired { id: "t2".into(), desired: TaskState::Shutdown }));
    MemoryCatalog::new(s, "n1")
}

fn task_container(slot: u32, task: &str) -> ContainerFacts {
    let name = format!("web.{slot}.{task}");
    ContainerFacts {
        id: format!("{name}-id"),
        name,
        image: "shoal:local".into(),
        labels: [
            (labels::NODE_ID, format!("{NODE_ID:016x}")),
            (labels::SERVICE_NAME, "web".into()),
            (labels::TASK_ID, task.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        exposed: [PortKey::tcp(8080)].into(),
        networks: [("shoal-web".to_string(), format!("172.18.0.{}", slot + 1))].into(),
        running: true,
        ..Default::default()
    }
}

fn other(name: &str) -> ContainerFacts {
    ContainerFacts {
        id: format!("{name}-id"),
        name: name.into(),
        image: "shoal:local".into(),
        labels: [(conventions::keys::SERVICE.to_string(), name.to_string())].into(),
        networks: [("bridge".to_string(), "172.17.0.9".to_string())].into(),
        running: true,
        ..Default::default()
    }
}

type Sender = mpsc::UnboundedSender<Result<ContainerEvent, String>>;

/// Containers in memory; events are sent by the test.
#[derive(Default)]
struct FakeSource {
    containers: Mutex<BTreeMap<String, ContainerFacts>>,
    subscribers: Mutex<Vec<Sender>>,
    lists: AtomicUsize,
    subscriptions: AtomicUsize,
}

impl FakeSource {
    fn with(containers: Vec<ContainerFacts>) -> Arc<Self> {
        let s = FakeSource::default();
        s.containers.lock().unwrap().extend(containers.into_iter().map(|c| (c.id.clone(), c)));
        Arc::new(s)
    }

    fn put(&self, c: ContainerFacts) {
        self.containers.lock().unwrap().insert(c.id.clone(), c);
    }

    fn change(&self, id: &str, f: impl FnOnce(&mut ContainerFacts)) {
        f(self.containers.lock().unwrap().get_mut(id).expect("container"));
    }

    fn remove(&self, id: &str) {
        self.containers.lock().unwrap().remove(id);
    }

    fn emit(&self, id: &str, action: ContainerAction) {
        for tx in self.subscribers.lock().unwrap().iter() {
            let _ = tx.send(Ok(ContainerEvent { id: id.into(), action }));
        }
    }

    /// The engine restarted: every stream fails.
    fn break_streams(&self) {
        for tx in self.subscribers.lock().unwrap().drain(..) {
            let _ = tx.send(Err("connection reset".into()));
        }
    }
}

#[async_trait]
impl ContainerSource for FakeSource {
    async fn list(&self) -> Result<Vec<ContainerFacts>, String> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        Ok(self.containers.lock().unwrap().values().filter(|c| c.running).cloned().collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerFacts>, String> {
        Ok(self.containers.lock().unwrap().get(id).cloned())
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, String>> {
        self.subscriptions.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().unwrap().push(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
    }
}

/// A link that fails every write while `down` is set (a manager unreachable).
struct FlakyLink {
    inner: MemoryCatalog,
    down: AtomicBool,
    attempts: AtomicUsize,
}

#[async_trait]
impl CatalogLink for FlakyLink {
    async fn node_catalog(&self, index: u64, wait: Duration) -> Result<NodeCatalog, Error> {
        self.inner.node_catalog(index, wait).await
    }

    async fn write(&self, cmds: Vec<CatalogCommand>) -> Result<Vec<CommandResult>, Error> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("no leader".into()));
        }
        self.inner.write(cmds).await
    }
}

fn quick(resync_every: Duration) -> Timing {
    Timing { resync_every, backoff_min: Duration::from_millis(10), backoff_max: Duration::from_millis(50) }
}

fn spawn(link: Arc<dyn CatalogLink>, source: Arc<FakeSource>, timing: Timing) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_with(link, source, node(), timing))
}

fn instances_of(c: &MemoryCatalog) -> Vec<Instance> {
    c.read(|s| s.catalog.node_instances("n1").cloned().collect())
}

fn ids(c: &MemoryCatalog) -> Vec<String> {
    instances_of(c).into_iter().map(|i| i.id.to_string()).collect()
}

/// Waits until `pred` holds (a few seconds at most).
async fn wait_for(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn the_first_resync_registers_running_containers_in_one_write() {
    let mut another_node = task_container(3, "t3");
    another_node.labels.insert(labels::NODE_ID.into(), "00000000000000bb".into());
    let mut stopped = other("stopped");
    stopped.running = false;
    let source = FakeSource::with(vec![
        task_container(1, "t1"),
        task_container(2, "t2"),
        another_node,
        other("legacy"),
        stopped,
    ]);
    let cat = catalog();
    let run = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    wait_for("the instances", || ids(&cat) == ["n1:legacy", "web.1.t1"]).await;
    let writes = cat.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "one write: {writes:?}");
    let sources: Vec<Source> = writes[0]
        .iter()
        .filter_map(|c| match c {
            CatalogCommand::Sync { node, source, .. } if node == "n1" => Some(*source),
            _ => None,
        })
        .collect();
    assert_eq!(sources, [Source::Task, Source::Registrator]);
    let task = instances_of(&cat).into_iter().find(|i| i.id == "web.1.t1").unwrap();
    assert_eq!((task.source, task.address.as_str(), task.port), (Source::Task, "172.18.0.2", 8080));
    assert_eq!(task.task_id.as_deref(), Some("t1"), "t2 (shutting down) is left out by the catalog, silently");
    run.abort();
}

#[tokio::test]
async fn a_die_event_deregisters_without_waiting_for_a_resync() {
    let source = FakeSource::with(vec![task_container(1, "t1"), other("legacy")]);
    let cat = catalog();
    let run = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    wait_for("registered", || ids(&cat).len() == 2).await;
    source.change("legacy-id", |c| c.running = false);
    source.emit("legacy-id", ContainerAction::Died);
    wait_for("legacy gone", || ids(&cat) == ["web.1.t1"]).await;
    source.remove("web.1.t1-id");
    source.emit("web.1.t1-id", ContainerAction::Destroyed);
    wait_for("the task gone (inspect: no such container)", || ids(&cat).is_empty()).await;
    assert_eq!(source.lists.load(Ordering::SeqCst), 1, "events alone, no resync");
    // And back: a start registers it again.
    source.put(other("legacy"));
    source.emit("legacy-id", ContainerAction::Started);
    wait_for("legacy again", || ids(&cat) == ["n1:legacy"]).await;
    run.abort();
}

#[tokio::test]
async fn a_restarted_agent_removes_what_went_while_it_was_away() {
    let source = FakeSource::with(vec![other("a"), other("b"), task_container(1, "t1")]);
    let cat = catalog();
    let first = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    wait_for("registered", || ids(&cat).len() == 3).await;
    first.abort();
    let _ = first.await;
    // While no agent runs: b and the task's container go, no event is seen.
    source.remove("b-id");
    source.remove("web.1.t1-id");
    let second = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    wait_for("b and the task removed by the resync", || ids(&cat) == ["n1:a"]).await;
    second.abort();
}

#[tokio::test]
async fn a_broken_event_stream_is_resubscribed_and_resynced() {
    let source = FakeSource::with(vec![other("a")]);
    let cat = catalog();
    let run = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    wait_for("registered", || ids(&cat) == ["n1:a"]).await;
    // The engine restarts: c started and a died meanwhile, and their events are lost.
    source.put(other("c"));
    source.remove("a-id");
    source.break_streams();
    wait_for("resubscribed and resynced", || ids(&cat) == ["n1:c"]).await;
    assert_eq!(source.subscriptions.load(Ordering::SeqCst), 2);
    assert_eq!(source.lists.load(Ordering::SeqCst), 2);
    // The new stream works.
    source.put(other("d"));
    source.emit("d-id", ContainerAction::Started);
    wait_for("d by its event", || ids(&cat) == ["n1:c", "n1:d"]).await;
    run.abort();
}

#[tokio::test]
async fn a_quiet_periodic_resync_writes_nothing() {
    let mut healthy = task_container(1, "t1");
    healthy.has_healthcheck = true;
    healthy.health = Some(DockerHealth::Healthy);
    let mut tagged = other("legacy");
    tagged.env = vec!["SERVICE_TAGS=a,b".into(), "SERVICE_REGION=eu".into(), "SERVICE_CHECK_TCP=1".into()];
    tagged.exposed.insert(PortKey::tcp(8080));
    let source = FakeSource::with(vec![healthy, tagged]);
    let cat = catalog();
    let run = spawn(Arc::new(cat.clone()), source.clone(), quick(Duration::from_millis(20)));
    wait_for("registered", || ids(&cat).len() == 2).await;
    let writes = cat.writes.lock().unwrap().len();
    let lists = source.lists.load(Ordering::SeqCst);
    wait_for("five more resyncs", || source.lists.load(Ordering::SeqCst) >= lists + 5).await;
    assert_eq!(cat.writes.lock().unwrap().len(), writes, "nothing changed: nothing written");
    // A change is written by the next resync, even without an event.
    source.change("legacy-id", |c| c.env.push("SERVICE_ZONE=z".into()));
    wait_for("the new meta", || {
        instances_of(&cat).iter().any(|i| i.id == "n1:legacy:8080" && i.meta.get("zone").is_some_and(|z| z == "z"))
    })
    .await;
    run.abort();
}

#[tokio::test]
async fn docker_health_changes_reach_the_check() {
    let mut c = task_container(1, "t1");
    c.has_healthcheck = true;
    c.health = Some(DockerHealth::Starting);
    let source = FakeSource::with(vec![c]);
    let cat = catalog();
    let run = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    let docker_check = |cat: &MemoryCatalog| {
        instances_of(cat)
            .into_iter()
            .flat_map(|i| i.checks.into_values())
            .find(|c| matches!(c.def.kind, CheckKind::Docker { .. }))
    };
    wait_for("registered, starting", || {
        docker_check(&cat).is_some_and(|c| c.status == Health::Critical && c.output == "starting")
    })
    .await;
    source.change("web.1.t1-id", |c| c.health = Some(DockerHealth::Healthy));
    source.emit("web.1.t1-id", ContainerAction::Health);
    wait_for("passing", || docker_check(&cat).is_some_and(|c| c.status == Health::Passing)).await;
    source.change("web.1.t1-id", |c| c.health = Some(DockerHealth::Unhealthy));
    source.emit("web.1.t1-id", ContainerAction::Health);
    wait_for("critical", || {
        docker_check(&cat).is_some_and(|c| c.status == Health::Critical && c.output == "unhealthy")
    })
    .await;
    run.abort();
}

#[tokio::test]
async fn failed_writes_are_retried_with_the_newest_state() {
    let cat = catalog();
    let link = Arc::new(FlakyLink { inner: cat.clone(), down: AtomicBool::new(true), attempts: AtomicUsize::new(0) });
    let source = FakeSource::with(vec![other("a")]);
    let run = spawn(link.clone(), source.clone(), quick(HOUR));
    wait_for("a few attempts", || link.attempts.load(Ordering::SeqCst) >= 3).await;
    // While the catalog is away: a goes, b comes (the event is covered by the pending resync).
    source.remove("a-id");
    source.put(other("b"));
    source.emit("b-id", ContainerAction::Started);
    link.down.store(false, Ordering::SeqCst);
    wait_for("the newest state", || ids(&cat) == ["n1:b"]).await;
    run.abort();
}

#[tokio::test]
async fn a_recreated_container_keeps_its_instance_when_the_old_one_is_destroyed_late() {
    let source = FakeSource::with(vec![other("a")]);
    let cat = catalog();
    let run = spawn(Arc::new(cat.clone()), source.clone(), quick(HOUR));
    wait_for("registered", || ids(&cat) == ["n1:a"]).await;
    // `docker rm -f a; docker run --name a …`: the new container's start is seen before the old
    // one's destroy.
    source.remove("a-id");
    let mut again = other("a");
    again.id = "a2-id".into();
    source.put(again);
    source.emit("a2-id", ContainerAction::Started);
    source.emit("a-id", ContainerAction::Destroyed);
    source.put(other("z"));
    source.emit("z-id", ContainerAction::Started);
    wait_for("z registered (every event before it applied)", || ids(&cat).contains(&"n1:z".to_string())).await;
    let a = instances_of(&cat).into_iter().find(|i| i.id == "n1:a").expect("a is still registered");
    assert_eq!(a.container_id.as_deref(), Some("a2-id"));
    run.abort();
}
