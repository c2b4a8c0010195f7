//! The service spec: stored verbatim as submitted (Docker's `ServiceSpec` JSON, so fields Shoal
//! does not interpret survive a read-modify-write), and read through [`ServiceSpec::parse`] into the
//! fields the orchestrator, scheduler and updater act on. Parsing is also validation: a spec that
//! does not parse is refused with the reason and nothing is stored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a spec was refused (a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid service spec: {0}")]
pub struct SpecError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError(msg.into()))
}

/// Replicated (N slots) or global (one task per eligible node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// N slots.
    Replicated {
        /// How many.
        replicas: u64,
    },
    /// One task per eligible node.
    Global,
}

/// What a placement constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintKey {
    /// `node.id`
    NodeId,
    /// `node.hostname`
    Hostname,
    /// `node.role`
    Role,
    /// `node.labels.K`
    Label(String),
}

/// `KEY==VALUE` or `KEY!=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// Left side.
    pub key: ConstraintKey,
    /// `==` (true) or `!=` (false).
    pub equal: bool,
    /// Right side.
    pub value: String,
}

impl Constraint {
    /// Parses `node.labels.zone==a` and friends (spaces around the operator are allowed).
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let (lhs, rhs, equal) = if let Some((l, r)) = s.split_once("==") {
            (l, r, true)
        } else if let Some((l, r)) = s.split_once("!=") {
            (l, r, false)
        } else {
            return bad(format!("constraint {s:?}: expected one operator from ==, !="));
        };
        let (lhs, value) = (lhs.trim(), rhs.trim());
        if value.is_empty() || value.contains("==") || value.contains("!=") {
            return bad(format!("constraint {s:?}: expected one value after the operator"));
        }
        let key = match lhs {
            "node.id" => ConstraintKey::NodeId,
            "node.hostname" => ConstraintKey::Hostname,
            "node.role" => ConstraintKey::Role,
            l => match l.strip_prefix("node.labels.") {
                Some(k) if !k.is_empty() => ConstraintKey::Label(k.to_string()),
                _ => {
                    return bad(format!(
                        "constraint {s:?}: unknown key {lhs:?}; use node.id, node.hostname, node.role or node.labels.KEY"
                    ));
                }
            },
        };
        if key == ConstraintKey::Role && value != "manager" && value != "worker" {
            return bad(format!("constraint {s:?}: node.role is manager or worker"));
        }
        Ok(Self { key, equal, value: value.to_string() })
    }
}

/// Restart policy condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartCondition {
    /// Never restart.
    None,
    /// Restart when the task failed (non-zero exit, error).
    OnFailure,
    /// Restart whenever it stops.
    Any,
}

/// When a stopped task is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Which ends are restarted.
    pub condition: RestartCondition,
    /// Wait before the replacement starts.
    pub delay: Duration,
    /// Most restarts within `window` (0: unlimited).
    pub max_attempts: u64,
    /// The window `max_attempts` counts in (zero: forever).
    pub window: Duration,
}

/// What an update does when tasks fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureAction {
    /// Stop the update.
    Pause,
    /// Carry on.
    Continue,
    /// Go back to the previous spec.
    Rollback,
}

/// Rolling update (or rollback) settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once (0: all).
    pub parallelism: u64,
    /// Wait between batches.
    pub delay: Duration,
    /// On failure.
    pub failure_action: FailureAction,
    /// How long a new task is watched for failure.
    pub monitor: Duration,
    /// Share of failed tasks tolerated.
    pub max_failure_ratio: f64,
    /// `true`: start the new task before stopping the old one.
    pub start_first: bool,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// tcp, udp or sctp.
    pub protocol: String,
    /// Port inside the container.
    pub target: u16,
    /// Port on the host (0: none).
    pub published: u16,
    /// `host` mode binds on the node itself (and conflicts with other tasks using it there).
    pub host_mode: bool,
}

/// The fields of a service spec Shoal acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique service name.
    pub name: String,
    /// Service labels.
    pub labels: BTreeMap<String, String>,
    /// Replicated or global.
    pub mode: Mode,
    /// Container image.
    pub image: String,
    /// Placement constraints (all must hold).
    pub constraints: Vec<Constraint>,
    /// `spread=node.labels.K` preferences, as label keys, in order.
    pub spread_over: Vec<String>,
    /// Most tasks of this service on one node (0: no limit).
    pub max_replicas_per_node: u64,
    /// Reserved CPUs, in billionths.
    pub reserve_nano_cpus: u64,
    /// Reserved memory, bytes.
    pub reserve_memory: u64,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Rolling update settings.
    pub update: UpdateConfig,
    /// Rollback settings.
    pub rollback: UpdateConfig,
    /// Published ports.
    pub ports: Vec<Port>,
    /// Move replicated tasks onto a node that becomes active (label `shoal.rebalance=true`).
    pub rebalance: bool,
}

const SECOND: u64 = 1_000_000_000;

fn duration(v: &Value, path: &str, default: Duration) -> Result<Duration, SpecError> {
    match v {
        Value::Null => Ok(default),
        Value::Number(n) => match n.as_u64() {
            Some(ns) => Ok(Duration::from_nanos(ns)),
            None => bad(format!("{path} must be a duration in nanoseconds ≥ 0, got {n}")),
        },
        other => bad(format!("{path} must be a duration in nanoseconds, got {other}")),
    }
}

fn count(v: &Value, path: &str, default: u64) -> Result<u64, SpecError> {
    match v {
        Value::Null => Ok(default),
        Value::Number(n) => match n.as_u64() {
            Some(c) => Ok(c),
            None => bad(format!("{path} must be a whole number ≥ 0, got {n}")),
        },
        other => bad(format!("{path} must be a whole number, got {other}")),
    }
}

fn string<'a>(v: &'a Value, path: &str) -> Result<Option<&'a str>, SpecError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => bad(format!("{path} must be a string, got {other}")),
    }
}

fn update_config(v: &Value, path: &str, default_parallelism: u64) -> Result<UpdateConfig, SpecError> {
    let failure_action = match string(&v["FailureAction"], &format!("{path}.FailureAction"))? {
        None | Some("") | Some("pause") => FailureAction::Pause,
        Some("continue") => FailureAction::Continue,
        Some("rollback") => FailureAction::Rollback,
        Some(o) => return bad(format!("{path}.FailureAction {o:?}: use pause, continue or rollback")),
    };
    let start_first = match string(&v["Order"], &format!("{path}.Order"))? {
        None | Some("") | Some("stop-first") => false,
        Some("start-first") => true,
        Some(o) => return bad(format!("{path}.Order {o:?}: use stop-first or start-first")),
    };
    let max_failure_ratio = match &v["MaxFailureRatio"] {
        Value::Null => 0.0,
        Value::Number(n) => n
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| SpecError(format!("{path}.MaxFailureRatio must be between 0 and 1, got {n}")))?,
        o => return bad(format!("{path}.MaxFailureRatio must be a number, got {o}")),
    };
    Ok(UpdateConfig {
        parallelism: count(&v["Parallelism"], &format!("{path}.Parallelism"), default_parallelism)?,
        delay: duration(&v["Delay"], &format!("{path}.Delay"), Duration::ZERO)?,
        failure_action,
        monitor: duration(&v["Monitor"], &format!("{path}.Monitor"), Duration::from_secs(5))?,
        max_failure_ratio,
        start_first,
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.len() <= 63
}

/// Checks `ContainerSpec.Mounts`: each a bind, volume or tmpfs mount with a target (what the
/// Docker runtime can make), a bind mount with an absolute source.
pub fn check_mounts(mounts: &Value) -> Result<(), SpecError> {
    let items = match mounts {
        Value::Null => return Ok(()),
        Value::Array(items) => items,
        other => return bad(format!("TaskTemplate.ContainerSpec.Mounts: {other} is not a list")),
    };
    for m in items {
        let typ = m["Type"].as_str().unwrap_or("volume");
        if !matches!(typ, "bind" | "volume" | "tmpfs") {
            return bad(format!("mount type {typ:?} is not supported (use bind, volume or tmpfs)"));
        }
        if !m["Target"].as_str().is_some_and(|t| t.starts_with('/')) {
            return bad(format!("mount {m}: Target must be an absolute path in the container"));
        }
        if typ == "bind" && !m["Source"].as_str().is_some_and(|s| s.starts_with('/')) {
            return bad(format!("bind mount {m}: Source must be an absolute path on the host"));
        }
    }
    Ok(())
}

impl ServiceSpec {
    /// Reads and checks a stored spec (the JSON text a service record keeps verbatim).
    pub fn from_text(text: &str) -> Result<Self, SpecError> {
        let value: Value = serde_json::from_str(text).map_err(|e| SpecError(format!("the spec is not JSON: {e}")))?;
        Self::parse(&value)
    }

    /// Reads and checks a Docker `ServiceSpec` JSON document.
    pub fn parse(spec: &Value) -> Result<Self, SpecError> {
        if !spec.is_object() {
            return bad("the spec must be a JSON object");
        }
        let name = string(&spec["Name"], "Name")?.unwrap_or_default().to_string();
        if !valid_name(&name) {
            return bad(format!(
                "Name {name:?}: a service needs a name of letters, digits, '-', '_' or '.', starting with a letter or digit (at most 63)"
            ));
        }
        let labels: BTreeMap<String, String> = match &spec["Labels"] {
            Value::Null => BTreeMap::new(),
            v => serde_json::from_value(v.clone()).map_err(|e| SpecError(format!("Labels: {e}")))?,
        };
        let mode = match &spec["Mode"] {
            Value::Null => Mode::Replicated { replicas: 1 },
            Value::Object(m) if m.len() == 1 && m.contains_key("Replicated") => {
                Mode::Replicated { replicas: count(&m["Replicated"]["Replicas"], "Mode.Replicated.Replicas", 1)? }
            }
            Value::Object(m) if m.len() == 1 && m.contains_key("Global") => Mode::Global,
            other => {
                return bad(format!(
                    "Mode {other}: use {{\"Replicated\":{{\"Replicas\":N}}}} or {{\"Global\":{{}}}} (jobs are not supported)"
                ));
            }
        };
        let task = &spec["TaskTemplate"];
        let image = string(&task["ContainerSpec"]["Image"], "TaskTemplate.ContainerSpec.Image")?.unwrap_or_default();
        if image.is_empty() {
            return bad("TaskTemplate.ContainerSpec.Image: a service needs an image");
        }
        check_mounts(&task["ContainerSpec"]["Mounts"])?;
        let placement = &task["Placement"];
        let constraints = match &placement["Constraints"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|c| match c {
                    Value::String(s) => Constraint::parse(s),
                    o => bad(format!("Placement.Constraints: {o} is not a string")),
                })
                .collect::<Result<_, _>>()?,
            o => return bad(format!("Placement.Constraints must be a list, got {o}")),
        };
        let mut spread_over = Vec::new();
        if let Value::Array(prefs) = &placement["Preferences"] {
            for p in prefs {
                let d = string(&p["Spread"]["SpreadDescriptor"], "Placement.Preferences.Spread.SpreadDescriptor")?
                    .unwrap_or_default();
                match d.strip_prefix("node.labels.") {
                    Some(k) if !k.is_empty() => spread_over.push(k.to_string()),
                    _ => return bad(format!("placement preference {d:?}: use spread=node.labels.KEY")),
                }
            }
        }
        let max_replicas_per_node = count(&placement["MaxReplicas"], "Placement.MaxReplicas", 0)?;
        let reservations = &task["Resources"]["Reservations"];
        let reserve_nano_cpus = count(&reservations["NanoCPUs"], "Resources.Reservations.NanoCPUs", 0)?;
        let reserve_memory = count(&reservations["MemoryBytes"], "Resources.Reservations.MemoryBytes", 0)?;
        let rp = &task["RestartPolicy"];
        let condition = match string(&rp["Condition"], "RestartPolicy.Condition")? {
            None | Some("") | Some("any") => RestartCondition::Any,
            Some("on-failure") => RestartCondition::OnFailure,
            Some("none") => RestartCondition::None,
            Some(o) => return bad(format!("RestartPolicy.Condition {o:?}: use none, on-failure or any")),
        };
        let restart = RestartPolicy {
            condition,
            delay: duration(&rp["Delay"], "RestartPolicy.Delay", Duration::from_nanos(5 * SECOND))?,
            max_attempts: count(&rp["MaxAttempts"], "RestartPolicy.MaxAttempts", 0)?,
            window: duration(&rp["Window"], "RestartPolicy.Window", Duration::ZERO)?,
        };
        let mut ports = Vec::new();
        if let Value::Array(items) = &spec["EndpointSpec"]["Ports"] {
            for p in items {
                let target = count(&p["TargetPort"], "EndpointSpec.Ports.TargetPort", 0)?;
                let published = count(&p["PublishedPort"], "EndpointSpec.Ports.PublishedPort", 0)?;
                if target == 0 || target > 65535 || published > 65535 {
                    return bad(format!("EndpointSpec.Ports: port {target}:{published} is out of range 1-65535"));
                }
                let protocol = string(&p["Protocol"], "EndpointSpec.Ports.Protocol")?.unwrap_or("tcp").to_string();
                let host_mode = match string(&p["PublishMode"], "EndpointSpec.Ports.PublishMode")? {
                    None | Some("") | Some("ingress") => false,
                    Some("host") => true,
                    Some(o) => return bad(format!("EndpointSpec.Ports.PublishMode {o:?}: use ingress or host")),
                };
                ports.push(Port { protocol, target: target as u16, published: published as u16, host_mode });
            }
        }
        let rebalance = labels.get("shoal.rebalance").is_some_and(|v| v == "true");
        Ok(Self {
            name,
            labels,
            mode,
            image: image.to_string(),
            constraints,
            spread_over,
            max_replicas_per_node,
            reserve_nano_cpus,
            reserve_memory,
            restart,
            update: update_config(&spec["UpdateConfig"], "UpdateConfig", 1)?,
            rollback: update_config(&spec["RollbackConfig"], "RollbackConfig", 1)?,
            ports,
            rebalance,
        })
    }

    /// The desired number of slots (replicated), or `None` for global services.
    pub fn replicas(&self) -> Option<u64> {
        match self.mode {
            Mode::Replicated { replicas } => Some(replicas),
            Mode::Global => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "shoal:local"}}, "Mode": {"Replicated": {"Replicas": 3}}})
    }

    fn with(path: &[&str], v: Value) -> Value {
        let mut spec = base();
        let mut at = &mut spec;
        for p in &path[..path.len() - 1] {
            at = at.as_object_mut().unwrap().entry(*p).or_insert(json!({}));
        }
        at[path[path.len() - 1]] = v;
        spec
    }

    #[test]
    fn mounts_the_runtime_cannot_make_are_refused_at_create() {
        let with = |m: Value| {
            let mut spec = base();
            spec["TaskTemplate"]["ContainerSpec"]["Mounts"] = m;
            ServiceSpec::parse(&spec).map(|_| ()).map_err(|e| e.0)
        };
        assert!(with(json!([{"Type": "bind", "Source": "/srv", "Target": "/data", "ReadOnly": true}])).is_ok());
        assert!(
            with(json!([{"Type": "volume", "Source": "v1", "Target": "/v"}, {"Type": "tmpfs", "Target": "/t"}]))
                .is_ok()
        );
        let e = with(json!([{"Type": "npipe", "Source": "x", "Target": "/x"}])).unwrap_err();
        assert!(e.contains("\"npipe\" is not supported (use bind, volume or tmpfs)"), "{e}");
        let e = with(json!([{"Type": "bind", "Source": "/tmp"}])).unwrap_err();
        assert!(e.contains("Target must be an absolute path"), "{e}");
        let e = with(json!([{"Type": "bind", "Source": "rel", "Target": "/x"}])).unwrap_err();
        assert!(e.contains("Source must be an absolute path on the host"), "{e}");
        assert!(with(json!("nope")).unwrap_err().contains("is not a list"));
    }

    #[test]
    fn defaults_as_docker() {
        let s = ServiceSpec::parse(&base()).unwrap();
        assert_eq!(s.mode, Mode::Replicated { replicas: 3 });
        assert_eq!(s.restart.condition, RestartCondition::Any);
        assert_eq!(s.restart.delay, Duration::from_secs(5));
        assert_eq!(
            (s.update.parallelism, s.update.failure_action, s.update.start_first),
            (1, FailureAction::Pause, false)
        );
        assert_eq!(s.update.monitor, Duration::from_secs(5));
        let stack = with(&["Mode"], json!({"Replicated": {}}));
        assert_eq!(
            ServiceSpec::parse(&stack).unwrap().mode,
            Mode::Replicated { replicas: 1 },
            "stack deploy sends no Replicas"
        );
        assert_eq!(ServiceSpec::parse(&with(&["Mode"], json!({"Global": {}}))).unwrap().mode, Mode::Global);
    }

    #[test]
    fn interpreted_fields() {
        let mut spec = base();
        spec["TaskTemplate"]["Placement"] = json!({
            "Constraints": ["node.role==manager", "node.labels.zone != b"],
            "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.rack"}}],
            "MaxReplicas": 2
        });
        spec["TaskTemplate"]["Resources"] = json!({"Reservations": {"NanoCPUs": 500000000u64, "MemoryBytes": 1048576}});
        spec["UpdateConfig"] =
            json!({"Parallelism": 2, "Delay": 1000000000u64, "FailureAction": "rollback", "Order": "start-first"});
        spec["EndpointSpec"] = json!({"Ports": [{"TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}]});
        spec["Labels"] = json!({"shoal.rebalance": "true"});
        let s = ServiceSpec::parse(&spec).unwrap();
        assert_eq!(s.constraints.len(), 2);
        assert_eq!(
            s.constraints[1],
            Constraint { key: ConstraintKey::Label("zone".into()), equal: false, value: "b".into() }
        );
        assert_eq!(s.spread_over, vec!["rack".to_string()]);
        assert_eq!((s.max_replicas_per_node, s.reserve_nano_cpus, s.reserve_memory), (2, 500_000_000, 1 << 20));
        assert_eq!(
            (s.update.parallelism, s.update.delay, s.update.failure_action),
            (2, Duration::from_secs(1), FailureAction::Rollback)
        );
        assert!(s.update.start_first && s.rebalance);
        assert_eq!(s.ports, vec![Port { protocol: "tcp".into(), target: 80, published: 8080, host_mode: true }]);
    }

    #[test]
    fn bad_specs_say_why() {
        let cases = [
            (
                "negative replicas",
                with(&["Mode"], json!({"Replicated": {"Replicas": -1}})),
                "Replicas must be a whole number ≥ 0",
            ),
            ("unknown mode", with(&["Mode"], json!({"ReplicatedJob": {}})), "jobs are not supported"),
            ("two modes", with(&["Mode"], json!({"Replicated": {}, "Global": {}})), "use {\"Replicated\""),
            ("no name", with(&["Name"], json!("")), "a service needs a name"),
            ("bad name", with(&["Name"], json!("-x")), "a service needs a name"),
            ("no image", with(&["TaskTemplate"], json!({})), "needs an image"),
            (
                "malformed constraint",
                with(&["TaskTemplate", "Placement"], json!({"Constraints": ["node.bogus~~x"]})),
                "expected one operator from ==, !=",
            ),
            (
                "unknown constraint key",
                with(&["TaskTemplate", "Placement"], json!({"Constraints": ["engine.x==y"]})),
                "unknown key",
            ),
            (
                "bad role",
                with(&["TaskTemplate", "Placement"], json!({"Constraints": ["node.role==boss"]})),
                "manager or worker",
            ),
            ("negative delay", with(&["UpdateConfig"], json!({"Delay": -5})), "UpdateConfig.Delay must be a duration"),
            ("string delay", with(&["TaskTemplate", "RestartPolicy"], json!({"Delay": "5s"})), "in nanoseconds"),
            (
                "bad condition",
                with(&["TaskTemplate", "RestartPolicy"], json!({"Condition": "sometimes"})),
                "use none, on-failure or any",
            ),
            (
                "bad failure action",
                with(&["UpdateConfig"], json!({"FailureAction": "panic"})),
                "use pause, continue or rollback",
            ),
            ("bad order", with(&["UpdateConfig"], json!({"Order": "random"})), "use stop-first or start-first"),
            ("bad ratio", with(&["UpdateConfig"], json!({"MaxFailureRatio": 2})), "between 0 and 1"),
            ("port out of range", with(&["EndpointSpec"], json!({"Ports": [{"TargetPort": 70000}]})), "out of range"),
            (
                "bad preference",
                with(
                    &["TaskTemplate", "Placement"],
                    json!({"Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}]}),
                ),
                "spread=node.labels.KEY",
            ),
        ];
        for (name, spec, want) in cases {
            let err = ServiceSpec::parse(&spec).expect_err(name).to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn constraint_table() {
        let ok = [
            ("node.id==abc", ConstraintKey::NodeId, true, "abc"),
            ("node.hostname!=h1", ConstraintKey::Hostname, false, "h1"),
            ("node.role == worker", ConstraintKey::Role, true, "worker"),
            ("node.labels.zone==a", ConstraintKey::Label("zone".into()), true, "a"),
        ];
        for (text, key, equal, value) in ok {
            assert_eq!(Constraint::parse(text).unwrap(), Constraint { key, equal, value: value.into() }, "{text}");
        }
        for text in ["node.id", "node.id==", "node.labels.==x", "node.id==a==b", "node.id=a"] {
            assert!(Constraint::parse(text).is_err(), "{text} must be refused");
        }
    }
}
