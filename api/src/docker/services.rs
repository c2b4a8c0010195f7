//! Services and tasks over HTTP, in the Docker Engine API's shapes (`Version.Index`, `Spec` echoed
//! verbatim, lowercase task states), so the same handlers serve Shoal's `/v1/` and the Docker API.
//! Errors are `{"message": ...}` with Docker's status codes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use shoal_model::services::{ServiceRecord, TaskRecord, TaskState};
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;
use shoal_registry::control::services::resolve;
use tokio::time::Instant;

use crate::query::ReadOptions;

/// An error as Docker answers it.
pub fn docker_error(e: &Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "message": e.to_string() }))).into_response()
}

fn spec_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A service as Docker shows it. `status`: (running, desired, completed) for `?status=true`.
pub fn service_json(s: &ServiceRecord, status: Option<(u64, u64, u64)>) -> Value {
    let spec = spec_value(&s.spec);
    let endpoint_spec = spec.get("EndpointSpec").cloned().unwrap_or_else(|| json!({"Mode": "vip"}));
    let ports: Vec<Value> = endpoint_spec
        .get("Ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            json!({
                "Protocol": p.get("Protocol").cloned().unwrap_or(json!("tcp")),
                "TargetPort": p.get("TargetPort").cloned().unwrap_or(json!(0)),
                "PublishedPort": p.get("PublishedPort").cloned().unwrap_or(json!(0)),
                "PublishMode": p.get("PublishMode").cloned().unwrap_or(json!("ingress")),
            })
        })
        .collect();
    let mut v = json!({
        "ID": s.id,
        "Version": {"Index": s.modify_index},
        "CreatedAt": s.created_at,
        "UpdatedAt": s.updated_at,
        "Spec": spec,
        "Endpoint": {"Spec": endpoint_spec, "Ports": ports},
    });
    if let Some(prev) = &s.previous_spec {
        v["PreviousSpec"] = spec_value(prev);
    }
    if let Some(u) = &s.update_status {
        v["UpdateStatus"] = json!({"State": u.state, "StartedAt": u.started_at, "Message": u.message});
        if let Some(c) = &u.completed_at {
            v["UpdateStatus"]["CompletedAt"] = json!(c);
        }
    }
    if let Some((running, desired, completed)) = status {
        v["ServiceStatus"] = json!({"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed});
    }
    v
}

/// A task as Docker shows it.
pub fn task_json(t: &TaskRecord, service: Option<&ServiceRecord>) -> Value {
    let spec = service
        .and_then(|s| s.spec_history.get(&t.spec_version))
        .map(|text| spec_value(text)["TaskTemplate"].clone())
        .unwrap_or(Value::Null);
    let mut status = json!({
        "Timestamp": t.status.timestamp,
        "State": t.status.state.as_str(),
        "Message": t.status.message,
    });
    if let Some(e) = &t.status.err {
        status["Err"] = json!(e);
    }
    if t.status.container_id.is_some() || t.status.exit_code.is_some() {
        status["ContainerStatus"] = json!({
            "ContainerID": t.status.container_id.clone().unwrap_or_default(),
            "ExitCode": t.status.exit_code.unwrap_or(0),
        });
    }
    let mut v = json!({
        "ID": t.id,
        "Version": {"Index": t.modify_index},
        "CreatedAt": t.created_at,
        "UpdatedAt": t.status.timestamp,
        "Labels": {},
        "Spec": spec,
        "ServiceID": t.service_id,
        "DesiredState": t.desired.as_str(),
        "Status": status,
    });
    if t.slot > 0 {
        v["Slot"] = json!(t.slot);
    }
    if let Some(n) = t.node_id {
        v["NodeID"] = json!(format!("{n:016x}"));
    }
    v
}

/// (running, desired, completed) tasks of a service, as `ServiceStatus` counts them.
pub fn service_status(s: &ServiceRecord, tasks: &[&TaskRecord]) -> (u64, u64, u64) {
    let running =
        tasks.iter().filter(|t| t.status.state == TaskState::Running && t.desired == TaskState::Running).count();
    let completed = tasks.iter().filter(|t| t.status.state == TaskState::Complete).count();
    let desired = match shoal_model::spec::ServiceSpec::from_text(&s.spec).ok().and_then(|p| p.replicas()) {
        Some(n) => n,
        None => tasks.iter().filter(|t| t.desired == TaskState::Running).count() as u64,
    };
    (running as u64, desired, completed as u64)
}

/// `POST /services/create`.
pub async fn create(State(m): State<Arc<Manager>>, body: Bytes) -> Response {
    let spec: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return docker_error(&Error::BadRequest(format!("the body is not a JSON service spec: {e}"))),
    };
    match m.create_service(spec).await {
        Ok(id) => (StatusCode::CREATED, axum::Json(json!({"ID": id, "Warnings": []}))).into_response(),
        Err(e) => docker_error(&e),
    }
}

/// `GET /services` (`?status=true` adds `ServiceStatus`).
pub async fn list(
    State(m): State<Arc<Manager>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(e) = m.linearize().await {
        return docker_error(&e);
    }
    let with_status = q.get("status").is_some_and(|v| v == "true" || v == "1");
    let filters = match Filters::parse(q.get("filters").map(String::as_str)) {
        Ok(f) => f,
        Err(e) => return docker_error(&e),
    };
    let out: Vec<Value> = m.view().read(|s| {
        s.services
            .services
            .values()
            .filter(|svc| filters.service_matches(svc))
            .map(|svc| {
                let status = with_status.then(|| {
                    let tasks: Vec<&TaskRecord> =
                        s.services.tasks.values().filter(|t| t.service_id == svc.id).collect();
                    service_status(svc, &tasks)
                });
                service_json(svc, status)
            })
            .collect()
    });
    axum::Json(out).into_response()
}

/// `GET /services/{id}` (`?insertDefaults=true` fills in the defaults Shoal applies, as Docker).
pub async fn inspect(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(e) = m.linearize().await {
        return docker_error(&e);
    }
    let defaults = q.get("insertDefaults").is_some_and(|v| v == "true" || v == "1");
    match m.view().read(|s| resolve(s.services.services.values(), &id).map(|svc| service_json(svc, None))) {
        Ok(mut v) => {
            if defaults {
                insert_defaults(&mut v["Spec"]);
            }
            axum::Json(v).into_response()
        }
        Err(e) => docker_error(&e),
    }
}

/// Fills in (only where absent) the defaults Shoal acts on, in Docker's shape.
pub fn insert_defaults(spec: &mut Value) {
    fn fill(target: &mut Value, defaults: Value) {
        if !target.is_object() {
            *target = json!({});
        }
        for (k, v) in defaults.as_object().expect("object") {
            match target.get_mut(k) {
                Some(existing) if existing.is_object() && v.is_object() => fill(existing, v.clone()),
                Some(_) => {}
                None => {
                    target[k] = v.clone();
                }
            }
        }
    }
    let update = json!({"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "stop-first"});
    fill(
        spec,
        json!({
            "Labels": {},
            "TaskTemplate": {
                "ContainerSpec": {"Init": false, "StopGracePeriod": 10_000_000_000u64, "DNSConfig": {}, "Isolation": "default"},
                "Resources": {"Limits": {}, "Reservations": {}},
                "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000u64, "MaxAttempts": 0},
                "Placement": {},
                "ForceUpdate": 0,
                "Runtime": "container"
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "UpdateConfig": update,
            "RollbackConfig": update,
            "EndpointSpec": {"Mode": "vip"}
        }),
    );
    // `{"Replicated": {}}` (stack deploy) means 1.
    if let Some(r) = spec["Mode"].get_mut("Replicated")
        && r.get("Replicas").is_none()
    {
        r["Replicas"] = json!(1);
    }
    // A global service has no Replicated block to fill.
    if spec["Mode"].get("Global").is_some()
        && let Some(m) = spec["Mode"].as_object_mut()
    {
        m.remove("Replicated");
    }
}

/// `POST /services/{id}/update?version=N[&rollback=previous]`.
pub async fn update(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(version) = q.get("version").and_then(|v| v.parse::<u64>().ok()) else {
        return docker_error(&Error::BadRequest("an update needs ?version=N, the Version.Index it was read at".into()));
    };
    let rollback = q.get("rollback").is_some_and(|v| v == "previous");
    let spec = if rollback || body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => return docker_error(&Error::BadRequest(format!("the body is not a JSON service spec: {e}"))),
        }
    };
    match m.update_service(&id, version, spec, rollback).await {
        Ok(()) => axum::Json(json!({"Warnings": []})).into_response(),
        Err(e) => docker_error(&e),
    }
}

/// `DELETE /services/{id}`.
pub async fn remove(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Response {
    match m.remove_service(&id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => docker_error(&e),
    }
}

/// `GET /tasks?filters=...` (service, node, desired-state, id, name, `_up-to-date`).
/// `GET /tasks/{id}`: one task by ID or unique ID prefix (`docker service logs` resolves names
/// with it).
pub async fn task(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Response {
    if let Err(e) = m.linearize().await {
        return docker_error(&e);
    }
    let found = m.view().read(|s| {
        shoal_registry::control::services::by_id_prefix(s.services.tasks.values(), |t| &t.id, "task", &id)
            .map(|t| task_json(t, s.services.services.get(&t.service_id)))
    });
    match found {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => docker_error(&e),
    }
}

///
/// Shoal's `/v1/tasks` also answers blocking queries (`?index=N&wait=D`, as Consul's): the answer
/// waits until a matching task, any service record, or a task deletion is newer than N, and
/// carries its index in `X-Consul-Index` (the CLI's progress display waits on it).
pub async fn tasks(State(m): State<Arc<Manager>>, RawQuery(raw): RawQuery) -> Response {
    let q = crate::query::Query::parse(raw.as_deref());
    let (filters, opts) = match (Filters::parse(q.get("filters")), ReadOptions::from_query(&q)) {
        (Ok(f), Ok(o)) => (f, o),
        (Err(e), _) | (_, Err(e)) => return docker_error(&e),
    };
    if let Err(e) = m.linearize().await {
        return docker_error(&e);
    }
    let view = m.view();
    let read = || {
        view.read(|s| {
            let tasks: Vec<&TaskRecord> = s
                .services
                .tasks
                .values()
                .filter(|t| filters.task_matches(t, s.services.services.get(&t.service_id)))
                .collect();
            let index = tasks
                .iter()
                .map(|t| t.modify_index)
                .chain(s.services.services.values().map(|s| s.modify_index))
                .chain([s.services.last_task_removal])
                .max()
                .unwrap_or(0);
            let out: Vec<Value> =
                tasks.into_iter().map(|t| task_json(t, s.services.services.get(&t.service_id))).collect();
            (index, out)
        })
    };
    let (index, out) = match opts.index {
        None => read(),
        Some(min) => view.watch().query(min, Instant::now() + opts.wait_with_jitter(), read).await,
    };
    let mut resp = axum::Json(out).into_response();
    resp.headers_mut().insert("X-Consul-Index", index.max(1).into());
    resp
}

/// Docker's `filters` query: `{"key": {"value": true}}` (or `{"key": ["value"]}`).
#[derive(Debug, Default)]
pub struct Filters(std::collections::BTreeMap<String, Vec<String>>);

impl Filters {
    const KEYS: &'static [&'static str] =
        &["id", "name", "label", "mode", "service", "node", "desired-state", "_up-to-date"];

    /// Parses the `filters` parameter; unknown keys are refused, as Docker does.
    pub fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(Self::default()) };
        let v: Value = serde_json::from_str(raw).map_err(|e| Error::BadRequest(format!("invalid filters: {e}")))?;
        let mut out = std::collections::BTreeMap::new();
        for (k, vals) in v.as_object().ok_or_else(|| Error::BadRequest("invalid filters: not an object".into()))? {
            if !Self::KEYS.contains(&k.as_str()) {
                return Err(Error::BadRequest(format!("Invalid filter '{k}'")));
            }
            let values: Vec<String> = match vals {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                _ => return Err(Error::BadRequest(format!("invalid filters: {k}"))),
            };
            out.insert(k.clone(), values);
        }
        Ok(Self(out))
    }

    fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|vals| vals.iter().any(|v| f(v)))
    }

    /// id (prefix), name (prefix), label (`k` or `k=v`), mode.
    pub fn service_matches(&self, s: &ServiceRecord) -> bool {
        let spec = spec_value(&s.spec);
        let labels = spec["Labels"].as_object().cloned().unwrap_or_default();
        let global = spec["Mode"].get("Global").is_some();
        self.any("id", |v| s.id.starts_with(v))
            && self.any("name", |v| s.name.starts_with(v))
            && self.any("label", |v| match v.split_once('=') {
                Some((k, val)) => labels.get(k).and_then(Value::as_str) == Some(val),
                None => labels.contains_key(v),
            })
            && self.any("mode", |v| (v == "global") == global)
    }

    /// service (ID or name), node (ID prefix), desired-state, id (prefix), name, `_up-to-date`.
    pub fn task_matches(&self, t: &TaskRecord, s: Option<&ServiceRecord>) -> bool {
        let name = s.map(|s| {
            if t.slot > 0 {
                format!("{}.{}", s.name, t.slot)
            } else {
                format!("{}.{:016x}", s.name, t.node_id.unwrap_or(0))
            }
        });
        self.any("service", |v| t.service_id == v || s.is_some_and(|s| s.name == v) || t.service_id.starts_with(v))
            && self.any("node", |v| t.node_id.is_some_and(|n| format!("{n:016x}").starts_with(v)))
            && self.any("desired-state", |v| t.desired.as_str() == v)
            && self.any("id", |v| t.id.starts_with(v))
            && self.any("name", |v| name.as_deref().is_some_and(|n| n.starts_with(v)))
            && self.any("_up-to-date", |_| s.is_some_and(|s| s.spec_version == t.spec_version))
            // Tasks carry no labels of their own: a label filter matches none.
            && self.any("label", |_| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_defaults_fills_only_what_is_absent() {
        let mut spec = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "i"}, "RestartPolicy": {"Condition": "none"}},
            "Mode": {"Replicated": {}}, "UpdateConfig": {"Parallelism": 2}});
        insert_defaults(&mut spec);
        assert_eq!(
            spec["TaskTemplate"]["RestartPolicy"],
            json!({"Condition": "none", "Delay": 5_000_000_000u64, "MaxAttempts": 0})
        );
        assert_eq!(spec["UpdateConfig"]["Parallelism"], 2, "given values stay");
        assert_eq!(spec["UpdateConfig"]["Monitor"], 5_000_000_000u64);
        assert_eq!(spec["RollbackConfig"]["Order"], "stop-first");
        assert_eq!(spec["Mode"], json!({"Replicated": {"Replicas": 1}}));
        assert_eq!(spec["TaskTemplate"]["ContainerSpec"]["Image"], "i");
        let mut global = json!({"Name": "g", "Mode": {"Global": {}}});
        insert_defaults(&mut global);
        assert_eq!(global["Mode"], json!({"Global": {}}));
    }
}
