//! `shoal service ...`: the `docker service` commands for people without the docker CLI, on the
//! same API (Docker-shaped objects under `/v1/`). Long operations show progress until converged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{ApiClient, encode_key};
use crate::commands::Format;
use crate::table;

/// `shoal service ...`
#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service.
    Create(CreateArgs),
    /// List services.
    Ls {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List a service's tasks (history included).
    Ps { service: String },
    /// Show a service as JSON.
    Inspect { service: String },
    /// Set the replicas of one or more services: NAME=N ...
    Scale {
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        pairs: Vec<String>,
        #[arg(long, short)]
        detach: bool,
    },
    /// Change a service (a new image or environment rolls its tasks over).
    Update(UpdateArgs),
    /// Go back to the previous spec.
    Rollback {
        service: String,
        #[arg(long, short)]
        detach: bool,
    },
    /// Remove services.
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show the logs of a service's tasks (as `docker service logs`), each line prefixed with
    /// its task and node.
    Logs {
        service: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines of each task (default: all).
        #[arg(long, short = 'n', value_name = "N")]
        tail: Option<String>,
    },
}

/// Flags shared by create and update.
#[derive(Args, Debug, Default)]
pub struct SpecFlags {
    /// Environment variable K=V (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    /// Placement constraint, e.g. node.role==worker (repeatable).
    #[arg(long = "constraint", value_name = "EXPR")]
    constraint: Vec<String>,
    /// Tasks replaced at once in an update (0: all).
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Wait between update batches (e.g. 10s, 500ms).
    #[arg(long, value_name = "DURATION")]
    update_delay: Option<String>,
    /// How long a new task is watched in an update.
    #[arg(long, value_name = "DURATION")]
    update_monitor: Option<String>,
    /// pause, continue or rollback.
    #[arg(long, value_name = "ACTION")]
    update_failure_action: Option<String>,
    /// stop-first or start-first.
    #[arg(long, value_name = "ORDER")]
    update_order: Option<String>,
    /// Tasks rolled back at once (0: all).
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    /// How long a task is watched in a rollback.
    #[arg(long, value_name = "DURATION")]
    rollback_monitor: Option<String>,
    /// none, on-failure or any.
    #[arg(long, value_name = "CONDITION")]
    restart_condition: Option<String>,
    /// Wait before a restart.
    #[arg(long, value_name = "DURATION")]
    restart_delay: Option<String>,
    /// Most restarts (0: unlimited).
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Reserve memory per task (e.g. 64M, 1G).
    #[arg(long, value_name = "BYTES")]
    reserve_memory: Option<String>,
    /// Reserve CPUs per task (e.g. 0.5).
    #[arg(long, value_name = "CPUS")]
    reserve_cpu: Option<f64>,
    /// Move tasks onto a node that becomes active (Swarm lacks this).
    #[arg(long)]
    rebalance: bool,
}

/// Flags of `shoal service create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Service name.
    #[arg(long)]
    name: String,
    /// Number of tasks (replicated mode).
    #[arg(long, conflicts_with = "mode")]
    replicas: Option<u64>,
    /// replicated or global.
    #[arg(long)]
    mode: Option<String>,
    /// Publish a port: PUBLISHED:TARGET[/tcp|udp] (repeatable; host mode with --publish-mode host).
    #[arg(long = "publish", short = 'p', value_name = "PUB:TARGET")]
    publish: Vec<String>,
    /// ingress or host.
    #[arg(long, default_value = "ingress")]
    publish_mode: String,
    /// Service label K=V (repeatable).
    #[arg(long = "label", short = 'l', value_name = "K=V")]
    label: Vec<String>,
    #[command(flatten)]
    spec: SpecFlags,
    /// Return at once instead of waiting for the tasks to run.
    #[arg(long, short)]
    detach: bool,
    /// The image.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Flags of `shoal service update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    service: String,
    /// New image.
    #[arg(long)]
    image: Option<String>,
    /// New number of tasks.
    #[arg(long)]
    replicas: Option<u64>,
    /// Remove an environment variable (repeatable).
    #[arg(long = "env-rm", value_name = "K")]
    env_rm: Vec<String>,
    /// Remove a constraint (repeatable).
    #[arg(long = "constraint-rm", value_name = "EXPR")]
    constraint_rm: Vec<String>,
    #[command(flatten)]
    spec: SpecFlags,
    #[arg(long, short)]
    detach: bool,
}

/// "10s", "500ms", "1m", "2h" → nanoseconds.
fn duration_ns(s: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("invalid duration {s:?}: use a number with ms, s, m or h (e.g. 10s)");
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let factor = match unit {
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(bad()),
    };
    Ok((n * factor) as u64)
}

/// "64M", "1G", "512k", "100" → bytes.
fn bytes(s: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("invalid size {s:?}: use a number with an optional k, M or G (e.g. 64M)");
    let (n, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    Ok(n.parse::<u64>().map_err(|_| bad())? * mult)
}

fn kv(s: &str, what: &str) -> Result<(String, String)> {
    let (k, v) = s.split_once('=').with_context(|| format!("invalid {what} {s:?}: use KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

/// Applies the shared flags to a spec (creating objects as needed).
fn apply_flags(spec: &mut Value, f: &SpecFlags) -> Result<()> {
    let task = &mut spec["TaskTemplate"];
    if !f.env.is_empty() {
        let mut env: Vec<Value> = task["ContainerSpec"]["Env"].as_array().cloned().unwrap_or_default();
        for e in &f.env {
            let (k, _) = kv(e, "--env")?;
            env.retain(|x| x.as_str().is_none_or(|x| x.split('=').next() != Some(k.as_str())));
            env.push(json!(e));
        }
        task["ContainerSpec"]["Env"] = json!(env);
    }
    if !f.constraint.is_empty() {
        let mut c: Vec<Value> = task["Placement"]["Constraints"].as_array().cloned().unwrap_or_default();
        c.extend(f.constraint.iter().map(|x| json!(x)));
        task["Placement"]["Constraints"] = json!(c);
    }
    if let Some(c) = &f.restart_condition {
        task["RestartPolicy"]["Condition"] = json!(c);
    }
    if let Some(d) = &f.restart_delay {
        task["RestartPolicy"]["Delay"] = json!(duration_ns(d)?);
    }
    if let Some(n) = f.restart_max_attempts {
        task["RestartPolicy"]["MaxAttempts"] = json!(n);
    }
    if let Some(m) = &f.reserve_memory {
        task["Resources"]["Reservations"]["MemoryBytes"] = json!(bytes(m)?);
    }
    if let Some(c) = f.reserve_cpu {
        if c < 0.0 {
            bail!("invalid --reserve-cpu {c}: CPUs cannot be negative");
        }
        task["Resources"]["Reservations"]["NanoCPUs"] = json!((c * 1e9) as u64);
    }
    let update = &mut spec["UpdateConfig"];
    if let Some(p) = f.update_parallelism {
        update["Parallelism"] = json!(p);
    }
    if let Some(d) = &f.update_delay {
        update["Delay"] = json!(duration_ns(d)?);
    }
    if let Some(d) = &f.update_monitor {
        update["Monitor"] = json!(duration_ns(d)?);
    }
    if let Some(a) = &f.update_failure_action {
        update["FailureAction"] = json!(a);
    }
    if let Some(o) = &f.update_order {
        update["Order"] = json!(o);
    }
    if let Some(p) = f.rollback_parallelism {
        spec["RollbackConfig"]["Parallelism"] = json!(p);
    }
    if let Some(d) = &f.rollback_monitor {
        spec["RollbackConfig"]["Monitor"] = json!(duration_ns(d)?);
    }
    if spec["UpdateConfig"].as_object().is_some_and(|o| o.is_empty()) {
        spec.as_object_mut().expect("object").remove("UpdateConfig");
    }
    if f.rebalance {
        spec["Labels"]["shoal.rebalance"] = json!("true");
    }
    Ok(())
}

async fn get_service(api: &ApiClient, name: &str) -> Result<Value> {
    api.get_json(&format!("/v1/services/{}", encode_key(name)))
        .await?
        .with_context(|| format!("no such service: {name}"))
}

async fn post_update(api: &ApiClient, svc: &Value, spec: &Value, rollback: bool) -> Result<()> {
    let id = svc["ID"].as_str().context("unexpected answer: no ID")?;
    let version = svc["Version"]["Index"].as_u64().context("unexpected answer: no version")?;
    let path =
        format!("/v1/services/{id}/update?version={version}{}", if rollback { "&rollback=previous" } else { "" });
    api.send(Method::POST, &path, Some(serde_json::to_vec(spec)?))
        .await?
        .with_context(|| format!("no such service: {id}"))?;
    Ok(())
}

/// Waits until every slot runs an up-to-date task and no update is under way, printing progress.
async fn converge(api: &ApiClient, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = String::new();
    loop {
        let svc = get_service(api, id).await?;
        let name = svc["Spec"]["Name"].as_str().unwrap_or(id).to_string();
        let filters = format!("{{\"service\":{{\"{id}\":true}},\"_up-to-date\":{{\"true\":true}}}}");
        let tasks: Vec<Value> =
            api.get_json(&format!("/v1/tasks?filters={}", encode_key(&filters))).await?.unwrap_or_default();
        let running =
            tasks.iter().filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running").count();
        let desired = svc["Spec"]["Mode"]["Replicated"]["Replicas"]
            .as_u64()
            .map_or_else(|| tasks.iter().filter(|t| t["DesiredState"] == "running").count(), |n| n as usize);
        let update = svc["UpdateStatus"]["State"].as_str().unwrap_or("");
        if update == "paused" || update == "rollback_paused" {
            bail!("service {name}: {}", svc["UpdateStatus"]["Message"].as_str().unwrap_or("update paused"));
        }
        let line = format!("overall progress: {running} out of {desired} tasks");
        if line != last {
            println!("{line}");
            last = line;
        }
        let updating = matches!(update, "updating" | "rollback_started");
        if running == desired && !updating {
            println!("verify: Service {name} converged");
            return Ok(());
        }
        if let Some(why) =
            tasks.iter().find(|t| t["Status"]["State"] == "pending").and_then(|t| t["Status"]["Message"].as_str())
            && last_pending_reason_printed(why)
        {
            println!("pending: {why}");
        }
        if Instant::now() > deadline {
            bail!("service {name} did not converge within 10 minutes; see `shoal service ps {name}`");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn last_pending_reason_printed(why: &str) -> bool {
    use std::sync::Mutex;
    static LAST: Mutex<String> = Mutex::new(String::new());
    let mut last = LAST.lock().expect("lock");
    if *last == why {
        false
    } else {
        *last = why.to_string();
        true
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn run(addr: &str, cmd: ServiceCmd) -> Result<()> {
    let api = ApiClient::new(addr)?;
    match cmd {
        ServiceCmd::Create(a) => {
            let mode = match (a.mode.as_deref(), a.replicas) {
                (Some("global"), _) => json!({"Global": {}}),
                (None | Some("replicated"), n) => json!({"Replicated": {"Replicas": n.unwrap_or(1)}}),
                (Some(other), _) => bail!("invalid --mode {other:?}: use replicated or global"),
            };
            let mut spec = json!({"Name": a.name, "TaskTemplate": {"ContainerSpec": {"Image": a.image}}, "Mode": mode});
            if !a.args.is_empty() {
                spec["TaskTemplate"]["ContainerSpec"]["Args"] = json!(a.args);
            }
            if !a.label.is_empty() {
                let labels: HashMap<String, String> =
                    a.label.iter().map(|l| kv(l, "--label")).collect::<Result<_>>()?;
                spec["Labels"] = json!(labels);
            }
            if !a.publish.is_empty() {
                let mut ports = Vec::new();
                for p in &a.publish {
                    let (pt, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    let (published, target) =
                        pt.split_once(':').with_context(|| format!("invalid --publish {p:?}: use PUBLISHED:TARGET"))?;
                    let port =
                        |s: &str| s.parse::<u16>().with_context(|| format!("invalid port {s:?} in --publish {p:?}"));
                    ports.push(json!({"Protocol": proto, "PublishedPort": port(published)?, "TargetPort": port(target)?, "PublishMode": a.publish_mode}));
                }
                spec["EndpointSpec"] = json!({"Ports": ports});
            }
            apply_flags(&mut spec, &a.spec)?;
            let body = api
                .send(Method::POST, "/v1/services/create", Some(serde_json::to_vec(&spec)?))
                .await?
                .context("no answer")?;
            let created: Value = serde_json::from_slice(&body).context("unexpected answer")?;
            let id = created["ID"].as_str().context("unexpected answer: no ID")?.to_string();
            println!("{id}");
            if !a.detach {
                converge(&api, &id).await?;
            }
        }
        ServiceCmd::Ls { format } => {
            let services: Vec<Value> = api.get_json("/v1/services?status=true").await?.unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&services)?),
                Format::Table => {
                    let rows: Vec<Vec<String>> = services
                        .iter()
                        .map(|s| {
                            let st = &s["ServiceStatus"];
                            let global = s["Spec"]["Mode"].get("Global").is_some();
                            vec![
                                short(s["ID"].as_str().unwrap_or_default()).to_string(),
                                s["Spec"]["Name"].as_str().unwrap_or_default().to_string(),
                                if global { "global" } else { "replicated" }.to_string(),
                                format!("{}/{}", st["RunningTasks"], st["DesiredTasks"]),
                                s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                            ]
                        })
                        .collect();
                    print!("{}", table::render(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], &rows));
                }
            }
        }
        ServiceCmd::Ps { service } => {
            let svc = get_service(&api, &service).await?;
            let id = svc["ID"].as_str().unwrap_or_default().to_string();
            let name = svc["Spec"]["Name"].as_str().unwrap_or_default().to_string();
            let filters = format!("{{\"service\":{{\"{id}\":true}}}}");
            let mut tasks: Vec<Value> =
                api.get_json(&format!("/v1/tasks?filters={}", encode_key(&filters))).await?.unwrap_or_default();
            let nodes: Vec<Value> = api.get_json("/v1/nodes").await?.unwrap_or_default();
            let node_name: HashMap<&str, &str> =
                nodes.iter().filter_map(|n| Some((n["ID"].as_str()?, n["Name"].as_str()?))).collect();
            // Per slot: the task that should run first, then the history, newest first.
            tasks.sort_by_key(|t| {
                (
                    t["Slot"].as_u64().unwrap_or(0),
                    t["DesiredState"] != "running",
                    std::cmp::Reverse(t["CreatedAt"].as_str().unwrap_or_default().to_string()),
                )
            });
            let mut last_slot = None;
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    let slot = t["Slot"].as_u64();
                    let label = match slot {
                        Some(s) => format!("{name}.{s}"),
                        None => format!("{name}.{}", t["NodeID"].as_str().unwrap_or("")),
                    };
                    let history = slot.is_some() && last_slot == Some(slot);
                    last_slot = Some(slot);
                    vec![
                        short(t["ID"].as_str().unwrap_or_default()).to_string(),
                        if history { format!(" \\_ {label}") } else { label },
                        t["Spec"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string(),
                        t["NodeID"].as_str().map(|n| node_name.get(n).copied().unwrap_or(n)).unwrap_or("").to_string(),
                        t["DesiredState"].as_str().unwrap_or_default().to_string(),
                        t["Status"]["State"].as_str().unwrap_or_default().to_string(),
                        t["Status"]["Err"].as_str().map_or_else(
                            || {
                                if t["Status"]["State"] == "pending" {
                                    t["Status"]["Message"].as_str().unwrap_or("").to_string()
                                } else {
                                    String::new()
                                }
                            },
                            str::to_string,
                        ),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"], &rows)
            );
        }
        ServiceCmd::Inspect { service } => {
            println!("{}", serde_json::to_string_pretty(&get_service(&api, &service).await?)?)
        }
        ServiceCmd::Scale { pairs, detach } => {
            for p in &pairs {
                let (name, n) = p.split_once('=').with_context(|| format!("invalid {p:?}: use SERVICE=REPLICAS"))?;
                let n: u64 =
                    n.parse().with_context(|| format!("invalid replicas {n:?} in {p:?}: use a whole number ≥ 0"))?;
                let svc = get_service(&api, name).await?;
                if svc["Spec"]["Mode"].get("Global").is_some() {
                    bail!("scale can only be used with replicated mode: {name} is global");
                }
                let mut spec = svc["Spec"].clone();
                spec["Mode"]["Replicated"]["Replicas"] = json!(n);
                post_update(&api, &svc, &spec, false).await?;
                println!("{name} scaled to {n}");
                if !detach {
                    converge(&api, svc["ID"].as_str().unwrap_or(name)).await?;
                }
            }
        }
        ServiceCmd::Update(a) => {
            let svc = get_service(&api, &a.service).await?;
            let mut spec = svc["Spec"].clone();
            if let Some(image) = &a.image {
                spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(image);
            }
            if let Some(n) = a.replicas {
                spec["Mode"]["Replicated"]["Replicas"] = json!(n);
            }
            if !a.env_rm.is_empty()
                && let Some(env) = spec["TaskTemplate"]["ContainerSpec"]["Env"].as_array_mut()
            {
                env.retain(|e| {
                    e.as_str().is_none_or(|e| !a.env_rm.iter().any(|k| e.split('=').next() == Some(k.as_str())))
                });
            }
            if !a.constraint_rm.is_empty()
                && let Some(c) = spec["TaskTemplate"]["Placement"]["Constraints"].as_array_mut()
            {
                c.retain(|x| x.as_str().is_none_or(|x| !a.constraint_rm.iter().any(|r| r == x)));
            }
            apply_flags(&mut spec, &a.spec)?;
            post_update(&api, &svc, &spec, false).await?;
            println!("{}", a.service);
            if !a.detach {
                converge(&api, svc["ID"].as_str().unwrap_or(&a.service)).await?;
            }
        }
        ServiceCmd::Rollback { service, detach } => {
            let svc = get_service(&api, &service).await?;
            post_update(&api, &svc, &json!({}), true).await?;
            println!("{service}");
            if !detach {
                converge(&api, svc["ID"].as_str().unwrap_or(&service)).await?;
            }
        }
        ServiceCmd::Logs { service, follow, tail } => {
            let tail = tail.unwrap_or_else(|| "all".into());
            if tail != "all" && tail.parse::<u64>().is_err() {
                bail!("--tail must be a number of lines or `all`, got {tail:?}");
            }
            let api = ApiClient::streaming(addr)?;
            let path = format!("/v1/services/{}/logs?follow={follow}&tail={tail}", encode_key(&service));
            let mut resp = api.stream(&path).await?;
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = resp.chunk().await.context("reading the log stream")? {
                out.write_all(&chunk)?;
                out.flush()?;
            }
        }
        ServiceCmd::Rm { services } => {
            for s in services {
                api.send(Method::DELETE, &format!("/v1/services/{}", encode_key(&s)), None)
                    .await?
                    .with_context(|| format!("no such service: {s}"))?;
                println!("{s}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration_ns("10s").unwrap(), 10_000_000_000);
        assert_eq!(duration_ns("500ms").unwrap(), 500_000_000);
        assert_eq!(duration_ns("1.5m").unwrap(), 90_000_000_000);
        assert!(duration_ns("10").is_err() && duration_ns("ten s").is_err() && duration_ns("5d").is_err());
        assert_eq!(bytes("64M").unwrap(), 64 << 20);
        assert_eq!(bytes("1G").unwrap(), 1 << 30);
        assert_eq!(bytes("100").unwrap(), 100);
        assert!(bytes("lots").is_err());
    }
}
