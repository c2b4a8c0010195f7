//! `/v1/catalog/*`: services, one service's instances, nodes, one node, datacenters, and the
//! catalog's own register/deregister (entries nobody probes, e.g. an external database).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_model::CommandResult;
use shoal_model::catalog::{CatalogCommand, DATACENTER};
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;

use super::body::{self, Obj};
use super::filter;
use super::{answer, check_dc, fail, has_tags, node_meta, node_meta_matches, parse_filter, read, shapes};
use crate::query::Query;

/// `GET /v1/catalog/services`: every service name with its tags (`?node-meta`, `?filter` on the instances).
pub async fn services(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let (meta, f) = match (node_meta(&q), parse_filter(&q, filter::CATALOG_SERVICE)) {
        (Ok(meta), Ok(f)) => (meta, f),
        (Err(e), _) | (_, Err(e)) => return fail(&m, &e),
    };
    let result = read(&m, &q, |s| {
        let (index, all) = s.catalog_services();
        if meta.is_empty() && f.is_none() {
            return (index, all);
        }
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in all.keys() {
            for e in s.service_health(name).1 {
                if !node_meta_matches(&e.node.meta, &meta) {
                    continue;
                }
                if f.as_ref().is_some_and(|f| !f.matches(&shapes::service_node(&e.node, &e.instance))) {
                    continue;
                }
                out.entry(name.clone()).or_default().extend(e.instance.tags.iter().map(|t| t.to_string()));
            }
        }
        (index, out)
    })
    .await;
    match result {
        Ok((index, services)) => answer(&m, index, services),
        Err(r) => r,
    }
}

/// `GET /v1/catalog/service/<name>`: its instances with their nodes (`?tag`, `?node-meta`, `?filter`),
/// in the same order as `/v1/health/service/<name>` (node, then ID), which old clients rely on.
pub async fn service(State(m): State<Arc<Manager>>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let tags: Vec<String> = q.all("tag").into_iter().map(str::to_string).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let (meta, f) = match (node_meta(&q), parse_filter(&q, filter::CATALOG_SERVICE)) {
        (Ok(meta), Ok(f)) => (meta, f),
        (Err(e), _) | (_, Err(e)) => return fail(&m, &e),
    };
    let result = read(&m, &q, |s| {
        let (index, entries) = s.service_health(&name);
        let out: Vec<Value> = entries
            .iter()
            .filter(|e| has_tags(&e.instance.tags, &tags) && node_meta_matches(&e.node.meta, &meta))
            .map(|e| shapes::service_node(&e.node, &e.instance))
            .filter(|v| f.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        (index, out)
    })
    .await;
    match result {
        Ok((index, v)) => answer(&m, index, v),
        Err(r) => r,
    }
}

/// `GET /v1/catalog/nodes` (`?node-meta`, `?filter`).
pub async fn nodes(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let (meta, f) = match (node_meta(&q), parse_filter(&q, filter::CATALOG_NODE)) {
        (Ok(meta), Ok(f)) => (meta, f),
        (Err(e), _) | (_, Err(e)) => return fail(&m, &e),
    };
    let result = read(&m, &q, |s| {
        let out: Vec<Value> = s
            .catalog_nodes()
            .iter()
            .filter(|n| node_meta_matches(&n.meta, &meta))
            .map(shapes::node)
            .filter(|v| f.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        (s.catalog_nodes_index(), out)
    })
    .await;
    match result {
        Ok((index, v)) => answer(&m, index, v),
        Err(r) => r,
    }
}

/// `GET /v1/catalog/node/<node>`: the node and its instances by ID (`null` when unknown, as Consul).
pub async fn node(State(m): State<Arc<Manager>>, Path(node): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let f = match parse_filter(&q, filter::AGENT_SERVICE) {
        Ok(f) => f,
        Err(e) => return fail(&m, &e),
    };
    let result = read(&m, &q, |s| {
        let index = s.checks_index();
        let Some(n) = s.catalog_node(&node) else { return (index, Value::Null) };
        let services: serde_json::Map<String, Value> = s
            .node_services(&node)
            .iter()
            .map(|i| (i.id.to_string(), shapes::agent_service(i)))
            .filter(|(_, v)| f.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        (index, json!({ "Node": shapes::node(&n), "Services": services }))
    })
    .await;
    match result {
        Ok((index, v)) => answer(&m, index, v),
        Err(r) => r,
    }
}

/// `GET /v1/catalog/datacenters`.
pub async fn datacenters(State(m): State<Arc<Manager>>) -> Response {
    answer(&m, m.view().watch().index(), [DATACENTER])
}

/// Writes catalog commands for a handler and answers Consul's `true`, or the refusal with its status.
pub(crate) async fn write_bool(m: &Manager, cmds: Vec<CatalogCommand>) -> Response {
    match m.catalog_write(cmds).await {
        Err(e) => fail(m, &e),
        Ok(results) => match results.into_iter().find_map(|r| match r {
            CommandResult::Refused(why) => Some(why),
            _ => None,
        }) {
            Some(why) => fail(m, &Error::from(why)),
            None => axum::Json(true).into_response(),
        },
    }
}

/// `PUT /v1/catalog/register`: a node (external unless it is a cluster node), and optionally one
/// instance and one check on it. Nothing is probed: statuses are as written.
pub async fn register(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let q = Query::parse(q.as_deref());
    let cmd = (|| -> Result<CatalogCommand, Error> {
        check_dc(q.get("dc"))?;
        let v = body::parse(&body)?;
        let o = Obj::root(&v, "")?;
        check_dc(o.str("Datacenter")?.as_deref())?;
        let node = o.str("Node")?.unwrap_or_default();
        if node.is_empty() {
            return Err(Error::BadRequest("Must provide node: the body needs a Node".into()));
        }
        let service = match o.obj("Service")? {
            None => None,
            Some(s) => Some(body::instance_spec(s.at("Service"), false)?),
        };
        let mut checks: Vec<Obj> = o.obj("Check")?.map(|c| c.at("Check")).into_iter().collect();
        checks.extend(o.objs("Checks")?.into_iter().map(|c| c.at("Checks[]")));
        if checks.len() > 1 {
            return Err(Error::BadRequest("register one check per request (Check, or Checks with one entry)".into()));
        }
        let check = match checks.first() {
            None => None,
            Some(c) => {
                let service_id = c.str("ServiceID")?.filter(|s| !s.is_empty());
                let name = c.str("Name")?.unwrap_or_default();
                let id = c.str_any(&["CheckID", "ID"])?.filter(|s| !s.is_empty()).unwrap_or(name.clone());
                if id.is_empty() {
                    return Err(Error::BadRequest("Check: give a CheckID or a Name".into()));
                }
                let mut spec = catalog_check(*c, &id, &name)?;
                spec.id = id;
                Some((service_id, spec))
            }
        };
        // py-consul sends the node's meta as `?node-meta=k:v`, not in the body: take both.
        let mut meta = o.string_map("NodeMeta")?;
        meta.extend(node_meta(&q)?);
        Ok(CatalogCommand::CatalogRegister {
            node,
            address: o.str("Address")?.unwrap_or_default(),
            meta,
            skip_node_update: o.bool("SkipNodeUpdate")?,
            service,
            check,
        })
    })();
    match cmd {
        Err(e) => fail(&m, &e),
        Ok(cmd) => write_bool(&m, vec![cmd]).await,
    }
}

/// A catalog check: any definition is stored as given, with its status; nothing runs it.
fn catalog_check(c: Obj, id: &str, name: &str) -> Result<shoal_model::catalog::CheckSpec, Error> {
    match body::check_spec(c, id, name) {
        Ok(spec) => Ok(spec),
        // A catalog check needs no type: it is only a status.
        Err(e) if e.to_string().contains("unknown check type") => {
            let status = match c.str("Status")? {
                None => shoal_model::catalog::Health::Critical,
                Some(s) if s.is_empty() => shoal_model::catalog::Health::Critical,
                Some(s) => shoal_model::catalog::Health::parse_status(&s).map_err(|e| Error::BadRequest(e.0))?,
            };
            Ok(shoal_model::catalog::CheckSpec {
                id: id.to_string(),
                name: if name.is_empty() { id.to_string() } else { name.to_string() },
                notes: c.str("Notes")?.unwrap_or_default(),
                def: shoal_model::catalog::CheckDef::manual(),
                status,
                output: c.str("Output")?.unwrap_or_default(),
            })
        }
        Err(e) => Err(e),
    }
}

/// `PUT /v1/catalog/deregister`: a check, an instance, or an external node with everything on it.
pub async fn deregister(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let q = Query::parse(q.as_deref());
    let cmd = (|| -> Result<CatalogCommand, Error> {
        check_dc(q.get("dc"))?;
        let v = body::parse(&body)?;
        let o = Obj::root(&v, "")?;
        check_dc(o.str("Datacenter")?.as_deref())?;
        let node = o.str("Node")?.unwrap_or_default();
        if node.is_empty() {
            return Err(Error::BadRequest("Must provide node: the body needs a Node".into()));
        }
        let service_id = o.str("ServiceID")?.filter(|s| !s.is_empty());
        let check_id = o.str("CheckID")?.filter(|s| !s.is_empty());
        if service_id.is_none() && check_id.is_none() && m.view().read(|s| s.nodes.values().any(|n| n.name == node)) {
            return Err(Error::BadRequest(format!(
                "{node:?} is a cluster node: remove it with `shoal node rm {node}`, or give a ServiceID or CheckID"
            )));
        }
        Ok(CatalogCommand::CatalogDeregister { node, service_id, check_id })
    })();
    match cmd {
        Err(e) => fail(&m, &e),
        Ok(cmd) => write_bool(&m, vec![cmd]).await,
    }
}
