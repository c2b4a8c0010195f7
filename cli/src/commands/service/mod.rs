//! `shoal service ...`: the `docker service` commands for people without the docker CLI, on the
//! same API (Docker-shaped objects under `/v1/`). Long operations show progress until converged.
//!
//! `mod.rs` holds the subcommands, `spec.rs` turns flags into a spec, `progress.rs` shows the
//! convergence.

mod progress;
mod spec;

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{ApiClient, encode_key};
use crate::commands::Format;
use crate::table;
use progress::converge;
pub use spec::{CreateArgs, UpdateArgs};

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

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub async fn run(addr: &str, cmd: ServiceCmd) -> Result<()> {
    let api = ApiClient::new(addr)?;
    match cmd {
        ServiceCmd::Create(a) => create(&api, &a).await,
        ServiceCmd::Ls { format } => ls(&api, format).await,
        ServiceCmd::Ps { service } => ps(&api, &service).await,
        ServiceCmd::Inspect { service } => {
            println!("{}", serde_json::to_string_pretty(&get_service(&api, &service).await?)?);
            Ok(())
        }
        ServiceCmd::Scale { pairs, detach } => scale(&api, &pairs, detach).await,
        ServiceCmd::Update(a) => update(&api, &a).await,
        ServiceCmd::Rollback { service, detach } => rollback(&api, &service, detach).await,
        ServiceCmd::Logs { service, follow, tail } => logs(addr, &service, follow, tail).await,
        ServiceCmd::Rm { services } => rm(&api, &services).await,
    }
}

async fn create(api: &ApiClient, a: &CreateArgs) -> Result<()> {
    let spec = spec::create_spec(a)?;
    let body =
        api.send(Method::POST, "/v1/services/create", Some(serde_json::to_vec(&spec)?)).await?.context("no answer")?;
    let created: Value = serde_json::from_slice(&body).context("unexpected answer")?;
    let id = created["ID"].as_str().context("unexpected answer: no ID")?.to_string();
    println!("{id}");
    if !a.detach {
        converge(api, &id).await?;
    }
    Ok(())
}

async fn ls(api: &ApiClient, format: Format) -> Result<()> {
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
                        s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            print!("{}", table::render(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE"], &rows));
        }
    }
    Ok(())
}

async fn ps(api: &ApiClient, service: &str) -> Result<()> {
    let svc = get_service(api, service).await?;
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
    // Each running task's health, as discovery sees it (the instances carry their task's ID).
    let entries: Vec<Value> =
        api.get_json(&format!("/v1/health/service/{}", encode_key(&name))).await?.unwrap_or_default();
    let health: HashMap<String, &'static str> = entries
        .iter()
        .filter_map(|e| {
            let task = e["Service"]["Meta"]["shoal-task"].as_str()?;
            Some((task.to_string(), crate::commands::catalog::aggregated(&e["Checks"])))
        })
        .collect();
    let rows = ps_rows(&name, &tasks, &node_name, &health);
    print!(
        "{}",
        table::render(&["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "HEALTH", "ERROR"], &rows)
    );
    Ok(())
}

/// One row per task (sorted by slot), the history of a slot drawn under its current task.
/// HEALTH is the task's instance's health in the catalog (`-` when it has none: not running, or not
/// registered yet).
fn ps_rows(
    name: &str,
    tasks: &[Value],
    node_name: &HashMap<&str, &str>,
    health: &HashMap<String, &'static str>,
) -> Vec<Vec<String>> {
    let mut last_slot = None;
    tasks
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
                t["ID"].as_str().and_then(|id| health.get(id)).copied().unwrap_or("-").to_string(),
                task_error(t),
            ]
        })
        .collect()
}

/// The ERROR column: the task's error, or why a pending task waits.
fn task_error(t: &Value) -> String {
    t["Status"]["Err"].as_str().map_or_else(
        || {
            if t["Status"]["State"] == "pending" {
                t["Status"]["Message"].as_str().unwrap_or("").to_string()
            } else {
                String::new()
            }
        },
        str::to_string,
    )
}

async fn scale(api: &ApiClient, pairs: &[String], detach: bool) -> Result<()> {
    for p in pairs {
        let (name, n) = p.split_once('=').with_context(|| format!("invalid {p:?}: use SERVICE=REPLICAS"))?;
        let n: u64 = n.parse().with_context(|| format!("invalid replicas {n:?} in {p:?}: use a whole number ≥ 0"))?;
        let svc = get_service(api, name).await?;
        if svc["Spec"]["Mode"].get("Global").is_some() {
            bail!("scale can only be used with replicated mode: {name} is global");
        }
        let mut spec = svc["Spec"].clone();
        spec["Mode"]["Replicated"]["Replicas"] = json!(n);
        post_update(api, &svc, &spec, false).await?;
        println!("{name} scaled to {n}");
        if !detach {
            converge(api, svc["ID"].as_str().unwrap_or(name)).await?;
        }
    }
    Ok(())
}

async fn update(api: &ApiClient, a: &UpdateArgs) -> Result<()> {
    let svc = get_service(api, &a.service).await?;
    let spec = spec::update_spec(a, svc["Spec"].clone())?;
    post_update(api, &svc, &spec, false).await?;
    println!("{}", a.service);
    if !a.detach {
        converge(api, svc["ID"].as_str().unwrap_or(&a.service)).await?;
    }
    Ok(())
}

async fn rollback(api: &ApiClient, service: &str, detach: bool) -> Result<()> {
    let svc = get_service(api, service).await?;
    post_update(api, &svc, &json!({}), true).await?;
    println!("{service}");
    if !detach {
        converge(api, svc["ID"].as_str().unwrap_or(service)).await?;
    }
    Ok(())
}

async fn logs(addr: &str, service: &str, follow: bool, tail: Option<String>) -> Result<()> {
    use std::io::Write;
    let tail = tail.unwrap_or_else(|| "all".into());
    if tail != "all" && tail.parse::<u64>().is_err() {
        bail!("--tail must be a number of lines or `all`, got {tail:?}");
    }
    let api = ApiClient::streaming(addr)?;
    let path = format!("/v1/services/{}/logs?follow={follow}&tail={tail}", encode_key(service));
    let mut resp = api.stream(&path).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = resp.chunk().await.context("reading the log stream")? {
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

async fn rm(api: &ApiClient, services: &[String]) -> Result<()> {
    for s in services {
        api.send(Method::DELETE, &format!("/v1/services/{}", encode_key(s)), None)
            .await?
            .with_context(|| format!("no such service: {s}"))?;
        println!("{s}");
    }
    Ok(())
}
