//! The engine's own Swarm mode, turned on for the Swarm rows and always put back: the guard's
//! `Drop` leaves the swarm and removes the `docker_gwbridge` network Swarm created, whether the
//! run ends normally, with an error, on ctrl-c (the run's future is dropped) or with a panic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hyper::{Method, StatusCode};

use crate::engine::Engine;

/// Swarm mode, on while this lives.
pub struct SwarmMode {
    socket: PathBuf,
    active: bool,
    /// Only a bridge this run made is removed.
    remove_gwbridge: bool,
}

impl SwarmMode {
    /// `docker swarm init --advertise-addr 127.0.0.1`; refuses if the engine is in a swarm already
    /// (it is someone else's then, and is left alone).
    pub async fn init(engine: &Engine, socket: &Path) -> Result<SwarmMode> {
        let state = engine.swarm_state().await?;
        if state != "inactive" {
            bail!("the engine is already in a swarm (LocalNodeState {state:?}); refusing to use or change it");
        }
        let gw = engine.call(Method::GET, "/networks/docker_gwbridge", None).await?;
        // From here on, whatever happens, Drop puts the engine back.
        let guard = SwarmMode {
            socket: socket.to_path_buf(),
            active: true,
            remove_gwbridge: gw.status == StatusCode::NOT_FOUND,
        };
        let out = guard.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        if !out.status.success() {
            bail!("docker swarm init: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine.swarm_state().await? != "active" {
            if Instant::now() > deadline {
                bail!("the engine's swarm did not become active within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("swarm: this engine is a one-node Swarm manager until the Swarm rows are done");
        Ok(guard)
    }

    fn docker(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("docker").env("DOCKER_HOST", format!("unix://{}", self.socket.display())).args(args).output()
    }

    /// `docker swarm leave --force`, then `docker network rm docker_gwbridge` if this run made it.
    pub fn leave(&mut self) {
        if !self.active {
            return;
        }
        self.active = false;
        match self.docker(&["swarm", "leave", "--force"]) {
            Ok(o) if o.status.success() => eprintln!("swarm: left the swarm (docker swarm leave --force)"),
            Ok(o) => eprintln!("swarm: docker swarm leave --force: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => eprintln!("swarm: cannot run docker swarm leave --force: {e}: RUN IT BY HAND"),
        }
        if self.remove_gwbridge {
            // The bridge can outlive the swarm by a moment while its endpoints go away.
            for attempt in 0..10 {
                match self.docker(&["network", "rm", "docker_gwbridge"]) {
                    Ok(o) if o.status.success() => {
                        eprintln!("swarm: removed docker_gwbridge");
                        break;
                    }
                    Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such network") => break,
                    Ok(o) if attempt == 9 => {
                        eprintln!(
                            "swarm: docker network rm docker_gwbridge: {}",
                            String::from_utf8_lossy(&o.stderr).trim()
                        )
                    }
                    Err(e) => {
                        eprintln!("swarm: cannot run docker network rm docker_gwbridge: {e}");
                        break;
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(300)),
                }
            }
        }
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        self.leave();
    }
}
