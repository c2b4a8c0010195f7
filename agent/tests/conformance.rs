//! The runtime contract, checked the same way against the fake and the Docker runtime: what a task
//! goes through (`step`), exit codes and log tails, shutdown and removal, adoption by a new
//! controller, a missing image, orphan removal and logs.
//!
//! The Docker half needs the engine and the `shoal:local` image (`compose/build-image.sh`); each
//! test uses a node ID of its own, so tests in parallel never see each other's containers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use shoal_agent::{DockerExecutor, Executor, FakeExecutor, RuntimeNode, Step, step};
use shoal_model::services::{TaskRecord, TaskState, TaskStatus};
use shoal_registry::rpc::wire::Assignment;

/// What a runtime under test needs besides the trait.
trait Harness: Send + Sync {
    fn executor(&self) -> Arc<dyn Executor>;
    /// A container spec that runs until stopped (and stops at once on SIGTERM).
    fn long_running(&self) -> serde_json::Value;
    /// A spec that exits with `failing_code()` after logging a line containing `failing_log()`.
    fn failing(&self) -> serde_json::Value;
    fn failing_code(&self) -> i64;
    fn failing_log(&self) -> &'static str;
    /// An image that is not there.
    fn missing_image(&self) -> &'static str;
    /// Kills a task's container from outside the agent (`docker kill`).
    fn kill(&self, task_id: &str, container_id: &str);
}

struct Fake(FakeExecutor);

impl Harness for Fake {
    fn executor(&self) -> Arc<dyn Executor> {
        Arc::new(self.0.clone())
    }
    fn long_running(&self) -> serde_json::Value {
        serde_json::json!({"ContainerSpec": {"Image": "shoal:local"}})
    }
    fn failing(&self) -> serde_json::Value {
        serde_json::json!({"ContainerSpec": {"Image": "fail:local"}})
    }
    fn failing_code(&self) -> i64 {
        1
    }
    fn failing_log(&self) -> &'static str {
        "failing on purpose"
    }
    fn missing_image(&self) -> &'static str {
        "missing:1"
    }
    fn kill(&self, task_id: &str, _container_id: &str) {
        assert!(self.0.kill(task_id), "the fake runs {task_id}");
    }
}

struct Docker(DockerExecutor);

impl Harness for Docker {
    fn executor(&self) -> Arc<dyn Executor> {
        Arc::new(self.0.clone())
    }
    fn long_running(&self) -> serde_json::Value {
        serde_json::json!({"ContainerSpec": {"Image": "shoal:local", "Args": ["whoami", "--port", "8080"], "StopGracePeriod": 5_000_000_000u64}})
    }
    fn failing(&self) -> serde_json::Value {
        serde_json::json!({"ContainerSpec": {"Image": "shoal:local", "Args": ["whoami", "--port", "8080", "--exit-after", "0.2", "--exit-code", "3"]}})
    }
    fn failing_code(&self) -> i64 {
        3
    }
    fn failing_log(&self) -> &'static str {
        "whoami exiting with code 3"
    }
    fn missing_image(&self) -> &'static str {
        "shoal-conformance-no-such-image:1"
    }
    fn kill(&self, _task_id: &str, container_id: &str) {
        let out = std::process::Command::new("docker").args(["kill", container_id]).output().expect("docker kill");
        assert!(out.status.success(), "docker kill: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn node_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64;
    format!(
        "c0{:06x}{:08x}",
        std::process::id() & 0xffffff,
        (nanos << 8 | N.fetch_add(1, Ordering::Relaxed)) & 0xffff_ffff
    )
}

async fn docker() -> Docker {
    let node = RuntimeNode { id: node_id(), name: "conformance".into(), publish_ip: None };
    Docker(DockerExecutor::connect(node).await.expect("a Docker engine (this suite runs against the real one)"))
}

fn fake() -> Fake {
    Fake(FakeExecutor::default())
}

fn assignment(task_id: &str, spec: serde_json::Value) -> Assignment {
    Assignment {
        task: TaskRecord {
            id: task_id.into(),
            service_id: format!("svc{task_id}"),
            slot: 1,
            node_id: Some(1),
            spec_version: 1,
            desired: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Assigned,
                timestamp: String::new(),
                message: String::new(),
                err: None,
                container_id: None,
                exit_code: None,
            },
            created_at: String::new(),
            create_index: 1,
            modify_index: 1,
        },
        service_name: "conf".into(),
        task_spec: spec.to_string(),
        endpoint_spec: String::new(),
    }
}

fn unique_task(prefix: &str) -> String {
    format!("{prefix}{}", node_id())
}

/// Steps until the task reaches `until` (or ends), returning every status it went through.
async fn run_until(
    c: &mut dyn shoal_agent::Controller,
    mut state: TaskState,
    desired: TaskState,
    until: TaskState,
) -> Vec<TaskStatus> {
    let mut seen = Vec::new();
    while state < until && !state.is_terminal() {
        match tokio::time::timeout(Duration::from_secs(60), step(state, desired, c)).await.expect("a step within 60 s")
        {
            Step::Status(s) => {
                state = s.state;
                seen.push(s);
            }
            Step::Retry(why) => panic!("the runtime failed: {why}"),
            Step::Done => break,
        }
    }
    seen
}

async fn owned(h: &dyn Harness, task_id: &str) -> Option<bool> {
    h.executor().owned().await.unwrap().into_iter().find(|o| o.task_id == task_id).map(|o| o.running)
}

async fn a_task_runs_stops_and_is_removed(h: &dyn Harness) {
    let task = unique_task("run");
    let x = h.executor();
    let mut c = x.controller(&assignment(&task, h.long_running())).unwrap();
    let seen = run_until(c.as_mut(), TaskState::Assigned, TaskState::Running, TaskState::Running).await;
    let states: Vec<TaskState> = seen.iter().map(|s| s.state).collect();
    assert_eq!(states, [TaskState::Preparing, TaskState::Starting, TaskState::Running]);
    let id = seen.last().unwrap().container_id.clone().expect("a running task names its container");
    assert_eq!(owned(h, &task).await, Some(true), "the node owns a running container for the task");
    // Desired shutdown interrupts nothing in flight and stops the container; it stays as history.
    let Step::Status(s) = step(TaskState::Running, TaskState::Shutdown, c.as_mut()).await else { panic!("a status") };
    assert_eq!((s.state, s.container_id.as_deref()), (TaskState::Shutdown, Some(id.as_str())));
    assert_eq!(owned(h, &task).await, Some(false), "stopped, kept as history");
    assert_eq!(step(TaskState::Shutdown, TaskState::Remove, c.as_mut()).await, Step::Done);
    c.remove().await.unwrap();
    assert_eq!(owned(h, &task).await, None, "removed");
    c.remove().await.expect("removing twice is fine");
}

async fn a_failing_container_reports_its_exit_code_and_last_log_lines(h: &dyn Harness) {
    let task = unique_task("fail");
    let x = h.executor();
    let mut c = x.controller(&assignment(&task, h.failing())).unwrap();
    let seen = run_until(c.as_mut(), TaskState::Assigned, TaskState::Running, TaskState::Complete).await;
    let last = seen.last().unwrap();
    assert_eq!((last.state, last.exit_code), (TaskState::Failed, Some(h.failing_code())), "{last:?}");
    assert!(last.message.contains(&format!("non-zero exit ({})", h.failing_code())), "{}", last.message);
    assert!(last.message.contains(h.failing_log()), "the log tail is in the message: {}", last.message);
    assert_eq!(last.err.as_deref(), Some(last.message.as_str()));
    c.remove().await.unwrap();
}

async fn a_new_controller_adopts_a_running_container(h: &dyn Harness) {
    let task = unique_task("adopt");
    let x = h.executor();
    let a = assignment(&task, h.long_running());
    let mut first = x.controller(&a).unwrap();
    let seen = run_until(first.as_mut(), TaskState::Assigned, TaskState::Running, TaskState::Running).await;
    let id = seen.last().unwrap().container_id.clone().unwrap();
    drop(first); // The agent restarts.
    let mut second = x.controller(&a).unwrap();
    // Starting again is a no-op on a running container, and waiting adopts it.
    let Step::Status(s) = step(TaskState::Starting, TaskState::Running, second.as_mut()).await else { panic!() };
    assert_eq!((s.state, s.container_id.as_deref()), (TaskState::Running, Some(id.as_str())), "the same container");
    let waiting = step(TaskState::Running, TaskState::Running, second.as_mut());
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.kill(&task, &id);
        std::future::pending::<()>().await
    };
    let outcome = tokio::select! { s = waiting => s, _ = killer => unreachable!() };
    let Step::Status(s) = outcome else { panic!("{outcome:?}") };
    assert_eq!((s.state, s.exit_code), (TaskState::Failed, Some(137)), "{s:?}");
    second.remove().await.unwrap();
}

async fn a_missing_image_is_rejected_with_a_clear_message(h: &dyn Harness) {
    let task = unique_task("missing");
    let spec = serde_json::json!({"ContainerSpec": {"Image": h.missing_image()}});
    let mut c = h.executor().controller(&assignment(&task, spec)).unwrap();
    let seen = run_until(c.as_mut(), TaskState::Assigned, TaskState::Running, TaskState::Running).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, TaskState::Rejected);
    assert!(last.message.contains(&format!("image not found locally: {}", h.missing_image())), "{}", last.message);
    assert_eq!(owned(h, &task).await, None, "nothing was created");
}

async fn a_shutdown_before_start_creates_nothing_that_stays(h: &dyn Harness) {
    let task = unique_task("early");
    let mut c = h.executor().controller(&assignment(&task, h.long_running())).unwrap();
    let seen = run_until(c.as_mut(), TaskState::Assigned, TaskState::Running, TaskState::Starting).await;
    assert_eq!(seen.last().unwrap().state, TaskState::Starting, "prepared (created), not started");
    let Step::Status(s) = step(TaskState::Preparing, TaskState::Shutdown, c.as_mut()).await else { panic!() };
    assert_eq!(s.state, TaskState::Shutdown);
    assert_eq!(owned(h, &task).await, None);
}

async fn orphans_are_removed_and_logs_are_read(h: &dyn Harness) {
    let task = unique_task("orphan");
    let x = h.executor();
    let mut c = x.controller(&assignment(&task, h.long_running())).unwrap();
    run_until(c.as_mut(), TaskState::Assigned, TaskState::Running, TaskState::Running).await;
    let container = x.owned().await.unwrap().into_iter().find(|o| o.task_id == task).expect("owned").container_id;
    // Logs: the workload said something when it started.
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = x
            .logs(&task, false, Some(10))
            .await
            .unwrap()
            .filter_map(|l| async { l.ok() })
            .map(|l| l.line)
            .collect()
            .await;
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!lines.is_empty(), "the container's log has lines");
    assert!(x.logs("no-such-task", false, None).await.is_err(), "no container, no log");
    x.remove_owned(&container).await.unwrap();
    assert_eq!(owned(h, &task).await, None, "the orphan is gone");
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod fake_runtime {
            $(#[tokio::test] async fn $name() { super::$name(&super::fake()).await })*
        }
        mod docker_runtime {
            $(#[tokio::test] async fn $name() { super::$name(&super::docker().await).await })*
        }
    };
}

conformance!(
    a_task_runs_stops_and_is_removed,
    a_failing_container_reports_its_exit_code_and_last_log_lines,
    a_new_controller_adopts_a_running_container,
    a_missing_image_is_rejected_with_a_clear_message,
    a_shutdown_before_start_creates_nothing_that_stays,
    orphans_are_removed_and_logs_are_read,
);
