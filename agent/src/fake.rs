//! A fake runtime for tests (as Nomad's mock driver): containers "run" in memory. An image whose
//! name starts with `fail` exits with code 1 shortly after it starts (logging why); `missing…`
//! images are not found; `FakeExecutor::kill` makes a running task's container exit with 137, as
//! `docker kill` would. It passes the same conformance tests as the Docker runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_registry::rpc::wire::Assignment;
use tokio::sync::watch;

use crate::exec::{Controller, ExecError, Executor, Exit, LogLine, LogStream, Owned};

/// Containers in memory.
#[derive(Clone, Default)]
pub struct FakeExecutor {
    /// Task ID → a way to make its container exit with a code.
    running: Arc<Mutex<HashMap<String, watch::Sender<Option<i64>>>>>,
    /// Task ID → its container's log; a task has a container from `prepare` until `remove`.
    containers: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl FakeExecutor {
    fn log(&self, task_id: &str, line: &str) {
        if let Some(log) = self.containers.lock().expect("fake lock").get_mut(task_id) {
            log.push(line.to_string());
        }
    }
}

impl FakeExecutor {
    /// Makes the container of `task_id` exit with 137; `false` if it is not running.
    pub fn kill(&self, task_id: &str) -> bool {
        match self.running.lock().expect("fake lock").get(task_id) {
            Some(tx) => tx.send(Some(137)).is_ok(),
            None => false,
        }
    }

    /// Task IDs with a running container.
    pub fn running(&self) -> Vec<String> {
        self.running.lock().expect("fake lock").keys().cloned().collect()
    }
}

#[async_trait]
impl Executor for FakeExecutor {
    fn controller(&self, a: &Assignment) -> Result<Box<dyn Controller>, ExecError> {
        let spec: serde_json::Value = serde_json::from_str(&a.task_spec).unwrap_or_default();
        let image = spec["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string();
        if image.is_empty() && !a.task_spec.is_empty() {
            return Err(ExecError::Rejected("the task has no image (ContainerSpec.Image)".into()));
        }
        Ok(Box::new(FakeController {
            task_id: a.task.id.clone(),
            image,
            exit: None,
            started: false,
            fake: self.clone(),
        }))
    }

    async fn owned(&self) -> Result<Vec<Owned>, ExecError> {
        let running = self.running.lock().expect("fake lock");
        Ok(self
            .containers
            .lock()
            .expect("fake lock")
            .keys()
            .map(|t| Owned { task_id: t.clone(), container_id: format!("fake-{t}"), running: running.contains_key(t) })
            .collect())
    }

    async fn remove_owned(&self, container_id: &str) -> Result<(), ExecError> {
        let task_id = container_id.strip_prefix("fake-").unwrap_or(container_id);
        if let Some(tx) = self.running.lock().expect("fake lock").remove(task_id) {
            let _ = tx.send(Some(0));
        }
        self.containers.lock().expect("fake lock").remove(task_id);
        Ok(())
    }

    async fn logs(&self, task_id: &str, _follow: bool, tail: Option<u64>) -> Result<LogStream, ExecError> {
        let Some(log) = self.containers.lock().expect("fake lock").get(task_id).cloned() else {
            return Err(ExecError::Failed(format!("task {task_id} has no container on this node")));
        };
        let skip = tail.map_or(0, |n| log.len().saturating_sub(n as usize));
        let lines: Vec<Result<LogLine, ExecError>> =
            log.into_iter().skip(skip).map(|line| Ok(LogLine { stream: "stdout", line })).collect();
        Ok(Box::pin(futures::stream::iter(lines)))
    }
}

struct FakeController {
    task_id: String,
    image: String,
    exit: Option<watch::Receiver<Option<i64>>>,
    started: bool,
    fake: FakeExecutor,
}

#[async_trait]
impl Controller for FakeController {
    async fn prepare(&mut self) -> Result<(), ExecError> {
        if self.image.starts_with("missing") {
            return Err(ExecError::Rejected(format!("image not found locally: {}", self.image)));
        }
        self.fake.containers.lock().expect("fake lock").entry(self.task_id.clone()).or_default();
        Ok(())
    }

    async fn start(&mut self) -> Result<(), ExecError> {
        if self.fake.running.lock().expect("fake lock").contains_key(&self.task_id) {
            self.started = true;
            return Ok(()); // Started already.
        }
        if !self.fake.containers.lock().expect("fake lock").contains_key(&self.task_id) {
            return Err(ExecError::Failed("the task's container is gone".into()));
        }
        let (tx, rx) = watch::channel(None);
        if self.image.starts_with("fail") {
            let tx = tx.clone();
            let fake = self.fake.clone();
            let id = self.task_id.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                fake.log(&id, "failing on purpose");
                let _ = tx.send(Some(1));
            });
        }
        self.fake.log(&self.task_id, "started");
        self.fake.running.lock().expect("fake lock").insert(self.task_id.clone(), tx);
        self.exit = Some(rx);
        self.started = true;
        Ok(())
    }

    async fn wait(&mut self) -> Result<Exit, ExecError> {
        if self.exit.is_none() {
            // Adopt a container this fake runs (a controller made anew for a running task).
            let rx = self.fake.running.lock().expect("fake lock").get(&self.task_id).map(|tx| tx.subscribe());
            match rx {
                Some(rx) => self.exit = Some(rx),
                None => return Err(ExecError::Failed("the task's container is gone".into())),
            }
        }
        let rx = self.exit.as_mut().expect("set above");
        let code = rx.wait_for(Option::is_some).await.ok().map(|v| v.expect("checked"));
        let Some(code) = code else { return std::future::pending().await };
        self.fake.running.lock().expect("fake lock").remove(&self.task_id);
        let log_tail = if code == 0 {
            String::new()
        } else {
            let logs = self.fake.containers.lock().expect("fake lock");
            logs.get(&self.task_id).map(|l| l[l.len().saturating_sub(5)..].join(" | ")).unwrap_or_default()
        };
        Ok(Exit { code, log_tail })
    }

    async fn shutdown(&mut self) -> Result<(), ExecError> {
        if let Some(tx) = self.fake.running.lock().expect("fake lock").remove(&self.task_id) {
            let _ = tx.send(Some(0));
        }
        Ok(())
    }

    async fn terminate(&mut self) -> Result<(), ExecError> {
        self.shutdown().await
    }

    async fn remove(&mut self) -> Result<(), ExecError> {
        self.shutdown().await?;
        self.fake.containers.lock().expect("fake lock").remove(&self.task_id);
        Ok(())
    }

    fn container_id(&self) -> Option<String> {
        (self.started || self.fake.containers.lock().expect("fake lock").contains_key(&self.task_id))
            .then(|| format!("fake-{}", self.task_id))
    }
}
