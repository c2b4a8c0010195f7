//! Exec checks on the Docker engine (`docker exec`): create an exec attached to stdout and stderr,
//! collect its output until it ends, then read its exit code.

use std::time::Duration;

use async_trait::async_trait;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures::StreamExt;

use super::DockerExecutor;
use crate::checks::ContainerExec;
use crate::checks::probe::OutputTail;

#[async_trait]
impl ContainerExec for DockerExecutor {
    async fn exec(&self, container: &str, args: &[String], timeout: Duration) -> Result<(i64, String), String> {
        let docker = &self.0.quick;
        let run = async {
            let config = CreateExecOptions {
                cmd: Some(args.to_vec()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let created =
                docker.create_exec(container, config).await.map_err(|e| format!("cannot exec in {container}: {e}"))?;
            let started = docker
                .start_exec(&created.id, Some(StartExecOptions { detach: false, ..Default::default() }))
                .await
                .map_err(|e| format!("cannot start the exec in {container}: {e}"))?;
            let mut tail = OutputTail::new();
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(chunk) = output.next().await {
                    match chunk {
                        Ok(line) => tail.push(line.as_ref()),
                        Err(e) => return Err(format!("reading the exec's output in {container}: {e}")),
                    }
                }
            }
            // The stream ends with the process; the engine may mark it exited a moment later.
            loop {
                let inspected =
                    docker.inspect_exec(&created.id).await.map_err(|e| format!("cannot inspect the exec: {e}"))?;
                match (inspected.running, inspected.exit_code) {
                    (Some(true), _) | (_, None) => tokio::time::sleep(Duration::from_millis(20)).await,
                    (_, Some(code)) => return Ok((code, tail.finish())),
                }
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("Timed out ({timeout:?}) running check")),
        }
    }
}
