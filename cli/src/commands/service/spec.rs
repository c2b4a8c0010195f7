//! From flags to a Docker-shaped service spec: the flags of `create` and `update`, what they
//! write into the spec, and the parsers of their values (durations, sizes, `K=V`, ports).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

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
    pub(super) detach: bool,
    /// The image.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Flags of `shoal service update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    pub(super) service: String,
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
    pub(super) detach: bool,
}

/// "10s", "500ms", "1.5m", "2h" → nanoseconds. The flags take the units their help names; the
/// shared reader also knows ns, us and d, which stay refused here.
fn duration_ns(s: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("invalid duration {s:?}: use a number with ms, s, m or h (e.g. 10s)");
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    if !matches!(unit, "ms" | "s" | "m" | "h") {
        return Err(bad());
    }
    let d = shoal_model::duration::parse(s).ok_or_else(bad)?;
    Ok(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

/// The spec `shoal service create` submits.
pub(super) fn create_spec(a: &CreateArgs) -> Result<Value> {
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
        let labels: HashMap<String, String> = a.label.iter().map(|l| kv(l, "--label")).collect::<Result<_>>()?;
        spec["Labels"] = json!(labels);
    }
    if !a.publish.is_empty() {
        spec["EndpointSpec"] = json!({"Ports": ports(&a.publish, &a.publish_mode)?});
    }
    apply_flags(&mut spec, &a.spec)?;
    Ok(spec)
}

/// `--publish PUBLISHED:TARGET[/PROTO]` as the EndpointSpec's ports.
fn ports(publish: &[String], mode: &str) -> Result<Vec<Value>> {
    let mut ports = Vec::new();
    for p in publish {
        let (pt, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        let (published, target) =
            pt.split_once(':').with_context(|| format!("invalid --publish {p:?}: use PUBLISHED:TARGET"))?;
        let port = |s: &str| s.parse::<u16>().with_context(|| format!("invalid port {s:?} in --publish {p:?}"));
        ports.push(
            json!({"Protocol": proto, "PublishedPort": port(published)?, "TargetPort": port(target)?, "PublishMode": mode}),
        );
    }
    Ok(ports)
}

/// The service's current spec with the changes `shoal service update` asks for.
pub(super) fn update_spec(a: &UpdateArgs, mut spec: Value) -> Result<Value> {
    if let Some(image) = &a.image {
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = json!(image);
    }
    if let Some(n) = a.replicas {
        spec["Mode"]["Replicated"]["Replicas"] = json!(n);
    }
    if !a.env_rm.is_empty()
        && let Some(env) = spec["TaskTemplate"]["ContainerSpec"]["Env"].as_array_mut()
    {
        env.retain(|e| e.as_str().is_none_or(|e| !a.env_rm.iter().any(|k| e.split('=').next() == Some(k.as_str()))));
    }
    if !a.constraint_rm.is_empty()
        && let Some(c) = spec["TaskTemplate"]["Placement"]["Constraints"].as_array_mut()
    {
        c.retain(|x| x.as_str().is_none_or(|x| !a.constraint_rm.iter().any(|r| r == x)));
    }
    apply_flags(&mut spec, &a.spec)?;
    Ok(spec)
}

/// Applies the shared flags to a spec (creating objects as needed).
fn apply_flags(spec: &mut Value, f: &SpecFlags) -> Result<()> {
    task_flags(&mut spec["TaskTemplate"], f)?;
    update_flags(spec, f)?;
    if f.rebalance {
        spec["Labels"]["shoal.rebalance"] = json!("true");
    }
    Ok(())
}

/// Environment, constraints, restart policy and reservations: the task template's part.
fn task_flags(task: &mut Value, f: &SpecFlags) -> Result<()> {
    if !f.env.is_empty() {
        let mut env: Vec<Value> = task["ContainerSpec"]["Env"].as_array().cloned().unwrap_or_default();
        for e in &f.env {
            // A variable set again replaces the old value.
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
    Ok(())
}

/// The UpdateConfig and RollbackConfig flags.
fn update_flags(spec: &mut Value, f: &SpecFlags) -> Result<()> {
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
