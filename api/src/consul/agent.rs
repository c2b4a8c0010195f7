//! `/v1/agent/*` for services and checks: what this node's agent owns. A manager's API is the
//! agent of the manager's own node: what is registered here is probed by this node's check runner
//! (it watches its node's entries), and TTL checks are updated here. (Workers keep no state and
//! answer no API; their agents register through the cluster port.)

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shoal_model::catalog::{CatalogCommand, CheckKind, CheckUpdate, Health, Source};
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;

use super::body::{self, Obj};
use super::catalog::write_bool;
use super::filter;
use super::{answer, check_dc, fail, parse_filter, shapes};
use crate::query::Query;

/// Consul's agent answers writes with an empty 200.
async fn write_empty(m: &Manager, cmds: Vec<CatalogCommand>) -> Response {
    let r = write_bool(m, cmds).await;
    if r.status().is_success() { StatusCode::OK.into_response() } else { r }
}

/// `GET /v1/agent/services`: this node's instances by ID (`?filter`).
pub async fn services(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let f = match parse_filter(&q, filter::AGENT_SERVICE) {
        Ok(f) => f,
        Err(e) => return fail(&m, &e),
    };
    let node = m.node.name.clone();
    let (index, out) = m.view().read(|s| {
        let out: serde_json::Map<String, Value> = s
            .node_services(&node)
            .iter()
            .map(|i| (i.id.to_string(), shapes::agent_service(i)))
            .filter(|(_, v)| f.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        (s.checks_index(), out)
    });
    answer(&m, index, out)
}

/// `GET /v1/agent/service/<id>`.
pub async fn service(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Response {
    let node = m.node.name.clone();
    let (index, found) = m.view().read(|s| {
        (s.checks_index(), s.node_services(&node).into_iter().find(|i| i.id == id).map(|i| shapes::agent_service(&i)))
    });
    match found {
        Some(v) => answer(&m, index, v),
        None => fail(&m, &Error::NotFound(format!("unknown service ID: {id}"))),
    }
}

/// `GET /v1/agent/checks`: this node's checks by ID (`?filter`); `serfHealth` is the cluster's,
/// not the agent's, as in Consul.
pub async fn checks(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let f = match parse_filter(&q, filter::HEALTH_CHECK) {
        Ok(f) => f,
        Err(e) => return fail(&m, &e),
    };
    let node = m.node.name.clone();
    let (index, out) = m.view().read(|s| {
        let out: serde_json::Map<String, Value> = s
            .node_checks(&node)
            .iter()
            .filter(|c| c.check.id != shoal_model::catalog::SERF_CHECK_ID)
            .map(|c| (c.check.id.to_string(), shapes::check(c)))
            .filter(|(_, v)| f.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        (s.checks_index(), out)
    });
    answer(&m, index, out)
}

/// `PUT /v1/agent/service/register`: a service on this node, with its checks (run by this node).
/// The checks given replace the instance's checks (Consul's `?replace-existing-checks`).
pub async fn register_service(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let q = Query::parse(q.as_deref());
    let spec = (|| {
        check_dc(q.get("dc"))?;
        let v = body::parse(&body)?;
        body::instance_spec(Obj::root(&v, "")?, true)
    })();
    match spec {
        Err(e) => fail(&m, &e),
        Ok(instance) => {
            let cmd = CatalogCommand::Register { node: m.node.name.clone(), source: Source::Agent, instance };
            write_empty(&m, vec![cmd]).await
        }
    }
}

/// `PUT /v1/agent/service/deregister/<id>`.
pub async fn deregister_service(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Response {
    let node = m.node.name.clone();
    if m.view().read(|s| s.catalog.instance(&node, &id).is_none()) {
        return fail(
            &m,
            &Error::NotFound(format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            )),
        );
    }
    write_empty(&m, vec![CatalogCommand::Deregister { node, id }]).await
}

/// `PUT /v1/agent/check/register`: a check on this node, or on one of its instances (`ServiceID`).
pub async fn register_check(State(m): State<Arc<Manager>>, body: Bytes) -> Response {
    let cmd = (|| {
        let v = body::parse(&body)?;
        let o = Obj::root(&v, "")?;
        let name = o.str("Name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(Error::BadRequest("Missing check name: the body needs a Name".into()));
        }
        let id = o.str_any(&["CheckID", "ID"])?.filter(|s| !s.is_empty()).unwrap_or(name.clone());
        let check = body::check_spec(o, &id, &name)?;
        let service_id = o.str("ServiceID")?.filter(|s| !s.is_empty());
        Ok(CatalogCommand::RegisterCheck { node: m.node.name.clone(), service_id, check })
    })();
    match cmd {
        Err(e) => fail(&m, &e),
        Ok(cmd) => write_empty(&m, vec![cmd]).await,
    }
}

/// `PUT /v1/agent/check/deregister/<id>`.
pub async fn deregister_check(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Response {
    let node = m.node.name.clone();
    if m.view().read(|s| s.catalog.check(&node, &id).is_none()) {
        return fail(&m, &Error::NotFound(format!("Unknown check ID {id:?}")));
    }
    write_empty(&m, vec![CatalogCommand::DeregisterCheck { node, check_id: id }]).await
}

/// Sets a TTL check's status (`pass`/`warn`/`fail`/`update`); only TTL checks take updates.
async fn ttl_update(m: &Manager, id: String, status: Health, output: String) -> Response {
    let node = m.node.name.clone();
    let kind = m.view().read(|s| s.catalog.check(&node, &id).map(|c| c.def.kind.clone()));
    match kind {
        None => fail(m, &Error::NotFound(format!("Unknown check ID {id:?}"))),
        Some(CheckKind::Ttl { .. }) => {
            let update = CheckUpdate { check_id: id, status, output, ttl_renewal: true };
            write_empty(m, vec![CatalogCommand::UpdateChecks { node, updates: vec![update] }]).await
        }
        Some(_) => fail(m, &Error::BadRequest(format!("CheckID {id:?} does not have associated TTL"))),
    }
}

fn note(q: &Option<String>) -> String {
    Query::parse(q.as_deref()).get("note").unwrap_or_default().to_string()
}

/// `PUT /v1/agent/check/pass/<id>?note=`.
pub async fn pass(State(m): State<Arc<Manager>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    ttl_update(&m, id, Health::Passing, note(&q)).await
}

/// `PUT /v1/agent/check/warn/<id>?note=`.
pub async fn warn(State(m): State<Arc<Manager>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    ttl_update(&m, id, Health::Warning, note(&q)).await
}

/// `PUT /v1/agent/check/fail/<id>?note=`.
pub async fn fail_check(State(m): State<Arc<Manager>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    ttl_update(&m, id, Health::Critical, note(&q)).await
}

/// `PUT /v1/agent/check/update/<id>` with `{"Status", "Output"}`.
pub async fn update(State(m): State<Arc<Manager>>, Path(id): Path<String>, body: Bytes) -> Response {
    let parsed = (|| {
        let v = body::parse(&body)?;
        let o = Obj::root(&v, "")?;
        let status = o.str("Status")?.unwrap_or_default();
        let status = Health::parse_status(&status)
            .map_err(|_| Error::BadRequest(format!("Invalid check status: '{status}'")))?;
        Ok::<_, Error>((status, o.str("Output")?.unwrap_or_default()))
    })();
    match parsed {
        Err(e) => fail(&m, &e),
        Ok((status, output)) => ttl_update(&m, id, status, output).await,
    }
}

/// `?enable=` (required) and `?reason=` of the maintenance endpoints.
fn maintenance_args(q: &Option<String>) -> Result<Option<String>, Error> {
    let q = Query::parse(q.as_deref());
    let enable = match q.get("enable") {
        None => return Err(Error::BadRequest("Missing value for enable".into())),
        Some(raw) => q.flag("enable").map_err(|_| Error::BadRequest(format!("Invalid value for enable: {raw:?}")))?,
    };
    Ok(enable.then(|| q.get("reason").unwrap_or_default().to_string()))
}

/// `PUT /v1/agent/maintenance?enable=true|false&reason=`: the whole node.
pub async fn node_maintenance(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    match maintenance_args(&q) {
        Err(e) => fail(&m, &e),
        Ok(reason) => {
            let cmd = CatalogCommand::Maintenance { node: m.node.name.clone(), service_id: None, reason };
            write_empty(&m, vec![cmd]).await
        }
    }
}

/// `PUT /v1/agent/service/maintenance/<id>?enable=true|false&reason=`.
pub async fn service_maintenance(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    match maintenance_args(&q) {
        Err(e) => fail(&m, &e),
        Ok(reason) => {
            let cmd = CatalogCommand::Maintenance { node: m.node.name.clone(), service_id: Some(id), reason };
            write_empty(&m, vec![cmd]).await
        }
    }
}
