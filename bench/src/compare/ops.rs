//! The timed operations, one code path for every system. A [`Driver`] knows how to deploy, scale
//! and remove a group of containers: the floor with plain engine calls, Swarm and Shoal through
//! the service API. Every operation is timed from its first request until the engine itself shows
//! the result (`GET /containers/json` on the engine's socket, by label), polled every 50 ms.
//!
//! ```text
//!   setup (untimed) ──► t0 ──► action ──► poll the engine until the result shows ──► t1
//!                                                                  └─ deadline: "timeout"
//!   cleanup (untimed, always): remove what is left, wait until no container of it is left
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::Op;
use crate::engine::Engine;

/// Label the floor's containers carry (with `shoal.bench.op=NAME` for the operation).
pub const BENCH_LABEL: &str = "shoal.bench";
const FLOOR_KEY: &str = "shoal.bench.op";
/// Swarm labels its task containers with the service name under this key.
pub const SWARM_KEY: &str = "com.docker.swarm.service.name";
/// Shoal's Docker runtime labels its task containers with the service name under this key.
pub const SHOAL_KEY: &str = "shoal.service.name";

const POLL: Duration = Duration::from_millis(50);

/// What every operation needs.
pub struct Ctx {
    /// The engine's own socket: containers are counted, killed and (for the floor) created here.
    pub engine: Engine,
    pub image: String,
    pub args: Vec<String>,
    /// Bound on each phase of an operation (setup, the timed part, cleanup).
    pub timeout: Duration,
    /// A network the floor's containers join (`--floor-network`), default: the engine's bridge.
    pub floor_network: Option<String>,
}

/// How one system deploys containers.
pub enum Driver {
    /// Containers created and started directly through the engine API, in parallel.
    Floor,
    /// Services through a Docker Engine API (Swarm's on the engine socket, Shoal's over TCP);
    /// `key` is the label its task containers carry the service name under.
    Service { api: Engine, key: &'static str },
}

/// The result of one operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    Secs(f64),
    Timeout,
    Failed,
}

/// One group of containers under test: a service, or the floor's containers with one label.
struct Group {
    name: String,
    label: String,
    service_id: Option<String>,
}

impl Driver {
    fn group(&self, name: &str) -> Group {
        let key = match self {
            Driver::Floor => FLOOR_KEY,
            Driver::Service { key, .. } => key,
        };
        Group { name: name.to_string(), label: format!("{key}={name}"), service_id: None }
    }

    async fn deploy(&self, ctx: &Ctx, g: &mut Group, replicas: u64) -> Result<()> {
        match self {
            Driver::Floor => create_start(ctx, &g.name, replicas).await,
            Driver::Service { api, .. } => {
                let spec = service_spec(ctx, &g.name, replicas);
                let r = api.call(Method::POST, "/services/create", Some(&spec)).await?;
                let id = r.expect("service create", &[])?.json()?["ID"].as_str().context("no ID")?.to_string();
                g.service_id = Some(id);
                Ok(())
            }
        }
    }

    async fn scale(&self, ctx: &Ctx, g: &Group, from: u64, to: u64) -> Result<()> {
        match self {
            Driver::Floor => create_start(ctx, &g.name, to - from).await,
            Driver::Service { api, .. } => {
                // As `docker service scale` does: read the spec and its version, write it back.
                let id = g.service_id.as_deref().context("no service")?;
                let svc =
                    api.call(Method::GET, &format!("/services/{id}"), None).await?.expect("inspect", &[])?.json()?;
                let version = svc["Version"]["Index"].as_u64().context("no Version.Index")?;
                let mut spec = svc["Spec"].clone();
                spec["Mode"]["Replicated"]["Replicas"] = json!(to);
                let path = format!("/services/{id}/update?version={version}");
                api.call(Method::POST, &path, Some(&spec)).await?.expect("service update", &[])?;
                Ok(())
            }
        }
    }

    async fn remove(&self, ctx: &Ctx, g: &mut Group) -> Result<()> {
        match self {
            Driver::Floor => force_remove(&ctx.engine, &g.label).await,
            Driver::Service { api, .. } => {
                if let Some(id) = g.service_id.take() {
                    let r = api.call(Method::DELETE, &format!("/services/{id}"), None).await?;
                    r.expect("service rm", &[StatusCode::NOT_FOUND])?;
                }
                Ok(())
            }
        }
    }

    /// What follows the kill of a container: the floor starts the replacement itself; an
    /// orchestrator notices on its own.
    async fn replace(&self, ctx: &Ctx, g: &Group) -> Result<()> {
        match self {
            Driver::Floor => create_start(ctx, &g.name, 1).await,
            Driver::Service { .. } => Ok(()),
        }
    }
}

/// Runs `op` once on `driver` as group `name`, cleans up, and returns how long it took.
pub async fn run(driver: &Driver, ctx: &Ctx, op: Op, name: &str) -> Outcome {
    let mut g = driver.group(name);
    let outcome = match timed(driver, ctx, op, &mut g).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("  {name}: failed: {e:#}");
            Outcome::Failed
        }
    };
    if let Err(e) = cleanup(driver, ctx, &mut g).await {
        eprintln!("  {name}: cleanup: {e:#}");
    }
    outcome
}

async fn timed(driver: &Driver, ctx: &Ctx, op: Op, g: &mut Group) -> Result<Outcome> {
    let e = &ctx.engine;
    let setup = |n: u64| Want::Running { n: n as usize, except: None };
    let outcome = match op {
        Op::Create1 | Op::Create10 | Op::Create50 => {
            let n = op.replicas();
            let t0 = Instant::now();
            driver.deploy(ctx, g, n).await?;
            wait(e, &g.label, &setup(n), t0, ctx.timeout).await
        }
        Op::Scale => {
            driver.deploy(ctx, g, 10).await?;
            if !ready(e, g, &setup(10), ctx.timeout).await {
                return Ok(Outcome::Timeout);
            }
            let t0 = Instant::now();
            driver.scale(ctx, g, 10, 30).await?;
            wait(e, &g.label, &setup(30), t0, ctx.timeout).await
        }
        Op::Rm => {
            driver.deploy(ctx, g, 50).await?;
            if !ready(e, g, &setup(50), ctx.timeout).await {
                return Ok(Outcome::Timeout);
            }
            let t0 = Instant::now();
            driver.remove(ctx, g).await?;
            wait(e, &g.label, &Want::Gone, t0, ctx.timeout).await
        }
        Op::Kill => {
            driver.deploy(ctx, g, 1).await?;
            if !ready(e, g, &setup(1), ctx.timeout).await {
                return Ok(Outcome::Timeout);
            }
            let victim = e.containers(&g.label, true).await?.into_iter().next().context("no running container")?;
            let t0 = Instant::now();
            e.call(Method::POST, &format!("/containers/{victim}/kill"), None).await?.expect("kill", &[])?;
            driver.replace(ctx, g).await?;
            wait(e, &g.label, &Want::Running { n: 1, except: Some(victim) }, t0, ctx.timeout).await
        }
    };
    Ok(outcome)
}

async fn ready(e: &Engine, g: &Group, want: &Want, timeout: Duration) -> bool {
    let ok = wait(e, &g.label, want, Instant::now(), timeout).await != Outcome::Timeout;
    if !ok {
        eprintln!("  {}: setup did not reach {want:?} within {timeout:?}", g.name);
    }
    ok
}

/// Removes whatever is left of the group and waits until none of its containers is left, so the
/// next operation starts on a quiet engine. An orchestrator that does not finish the job in time
/// gets its leftovers force-removed (and a warning).
async fn cleanup(driver: &Driver, ctx: &Ctx, g: &mut Group) -> Result<()> {
    let removed = driver.remove(ctx, g).await;
    if wait(&ctx.engine, &g.label, &Want::Gone, Instant::now(), ctx.timeout).await == Outcome::Timeout {
        eprintln!("  {}: containers left after {:?}: force-removing them", g.name, ctx.timeout);
        force_remove(&ctx.engine, &g.label).await?;
    }
    removed
}

/// The condition an operation waits for, on the containers of one label.
#[derive(Debug)]
enum Want {
    /// At least `n` running, not counting `except`.
    Running { n: usize, except: Option<String> },
    /// None left, in any state.
    Gone,
}

/// Polls the engine until `want` holds; the time since `t0` then, or `Timeout` after `timeout`.
async fn wait(e: &Engine, label: &str, want: &Want, t0: Instant, timeout: Duration) -> Outcome {
    let mut last_error = None;
    loop {
        let listed = match want {
            Want::Running { .. } => e.containers(label, true).await,
            Want::Gone => e.containers(label, false).await,
        };
        match listed {
            Ok(ids) => {
                let done = match want {
                    Want::Running { n, except } => ids.iter().filter(|id| except.as_ref() != Some(*id)).count() >= *n,
                    Want::Gone => ids.is_empty(),
                };
                if done {
                    return Outcome::Secs(t0.elapsed().as_secs_f64());
                }
            }
            // A failed poll is retried until the deadline; say so once.
            Err(err) if last_error.is_none() => {
                eprintln!("  polling {label}: {err:#} (retrying)");
                last_error = Some(err);
            }
            Err(_) => {}
        }
        if t0.elapsed() >= timeout {
            return Outcome::Timeout;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The spec both orchestrators get: the CLI's `--update-*` defaults, restart on any exit without
/// delay.
fn service_spec(ctx: &Ctx, name: &str, replicas: u64) -> Value {
    let update = json!({"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "stop-first"});
    json!({
        "Name": name,
        "Labels": {BENCH_LABEL: "1"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": ctx.image, "Args": ctx.args},
            "RestartPolicy": {"Condition": "any", "Delay": 0, "MaxAttempts": 0},
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "UpdateConfig": update,
        "RollbackConfig": update,
    })
}

/// The floor: creates and starts `n` containers in parallel, one connection each.
async fn create_start(ctx: &Ctx, name: &str, n: u64) -> Result<()> {
    let mut body = json!({
        "Image": ctx.image,
        "Cmd": ctx.args,
        "Labels": {BENCH_LABEL: "1", FLOOR_KEY: name},
    });
    if let Some(net) = &ctx.floor_network {
        body["HostConfig"] = json!({"NetworkMode": net});
    }
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (engine, body) = (ctx.engine.clone(), body.clone());
        set.spawn(async move {
            let mut conn = engine.connect().await?;
            let r = conn.call(Method::POST, "/containers/create", Some(&body)).await?.expect("create", &[])?;
            let id = r.json()?["Id"].as_str().context("no Id")?.to_string();
            conn.call(Method::POST, &format!("/containers/{id}/start"), None).await?.expect("start", &[])?;
            Ok::<_, anyhow::Error>(())
        });
    }
    join_all(set).await
}

/// Force-removes every container carrying `label`, in parallel, one connection each.
pub async fn force_remove(e: &Engine, label: &str) -> Result<()> {
    let mut set = JoinSet::new();
    for id in e.containers(label, false).await? {
        let e = e.clone();
        set.spawn(async move {
            let r = e.call(Method::DELETE, &format!("/containers/{id}?force=1"), None).await?;
            r.expect("remove", &[StatusCode::NOT_FOUND, StatusCode::CONFLICT])?;
            Ok::<_, anyhow::Error>(())
        });
    }
    join_all(set).await
}

/// Waits for every task of `set`; the first error, after all have finished.
async fn join_all(mut set: JoinSet<Result<()>>) -> Result<()> {
    let mut first = None;
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = r {
            failed += 1;
            first.get_or_insert(e);
        }
    }
    match first {
        None => Ok(()),
        Some(e) => bail!("{failed} of the parallel requests failed, the first: {e:#}"),
    }
}
