//! A fake runtime for tests (as Nomad's mock driver): containers "run" in memory. An image whose
//! name starts with `fail` exits with code 1 shortly after it starts; `FakeExecutor::kill` makes a
//! running task's container exit with 137, as `docker kill` would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_registry::assignments::Assignment;
use tokio::sync::watch;

use crate::exec::{Controller, ExecError, Executor, Exit};

/// Containers in memory.
#[derive(Clone, Default)]
pub struct FakeExecutor {
    /// Task ID → a way to make its container exit with a code.
    running: Arc<Mutex<HashMap<String, watch::Sender<Option<i64>>>>>,
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

impl Executor for FakeExecutor {
    fn controller(&self, a: &Assignment) -> Result<Box<dyn Controller>, ExecError> {
        let spec: serde_json::Value = serde_json::from_str(&a.task_spec).unwrap_or_default();
        let image = spec["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string();
        Ok(Box::new(FakeController {
            task_id: a.task.id.clone(),
            image,
            exit: None,
            started: false,
            fake: self.clone(),
        }))
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
        if self.image.is_empty() {
            return Err(ExecError::Rejected("the task has no image".into()));
        }
        Ok(())
    }

    async fn start(&mut self) -> Result<(), ExecError> {
        let (tx, rx) = watch::channel(None);
        if self.image.starts_with("fail") {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Some(1));
            });
        }
        self.fake.running.lock().expect("fake lock").insert(self.task_id.clone(), tx);
        self.exit = Some(rx);
        self.started = true;
        Ok(())
    }

    async fn wait(&mut self) -> Result<Exit, ExecError> {
        let Some(rx) = self.exit.as_mut() else { return Err(ExecError::Failed("not started".into())) };
        let code = rx.wait_for(Option::is_some).await.ok().map(|v| v.expect("checked"));
        let Some(code) = code else { return std::future::pending().await };
        self.fake.running.lock().expect("fake lock").remove(&self.task_id);
        Ok(Exit { code })
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
        Ok(())
    }

    fn container_id(&self) -> Option<String> {
        self.started.then(|| format!("fake-{}", self.task_id))
    }
}
