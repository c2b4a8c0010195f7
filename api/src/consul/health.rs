//! `/v1/health/*`: a service's instances with every check that decides their health, checks by
//! state, by service and by node. A blocking query on one service waits on that service's index
//! only (its instances and their nodes), so thousands of watchers of one service cost a re-read of
//! that service each, not of the catalog.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shoal_model::catalog::Health;
use shoal_model::catalog::read::CheckView;
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;

use super::filter;
use super::{answer, fail, has_tags, node_meta, node_meta_matches, parse_filter, read, shapes};
use crate::query::Query;

/// `?passing` in Go's spellings; Consul's message for anything else.
fn passing(q: &Query) -> Result<bool, Error> {
    q.flag("passing").map_err(|_| Error::BadRequest("Invalid value for ?passing".into()))
}

/// Answers to `/v1/health/service/<name>` shared by its watchers. One change wakes every watcher of
/// the service; the first to read it at the new index renders the answer, and the others reuse the
/// same bytes instead of building, serialising and freeing it again each (with 1,000 watchers that
/// was 90 % of the manager's time). Keyed by manager, service and the query parameters that shape
/// the answer; an entry is only used at the exact index it was rendered at.
static SHARED: LazyLock<Mutex<HashMap<String, (u64, Bytes)>>> = LazyLock::new(Default::default);

/// At most this many shared answers are kept; past it the cache starts again empty.
const SHARED_MAX: usize = 4096;

/// The parameters that change what `/v1/health/service` answers (not `index`, `wait`, `stale`…).
fn shape_key(m: &Manager, name: &str, q: &Query) -> String {
    let mut key = format!("{:016x}\u{0}{name}", m.id);
    for p in ["tag", "passing", "node-meta", "filter"] {
        for v in q.all(p) {
            key.push('\u{0}');
            key.push_str(p);
            key.push('=');
            key.push_str(v);
        }
    }
    key
}

/// `GET /v1/health/service/<name>` (`?passing`, `?tag`, `?node-meta`, `?filter`).
pub async fn service(State(m): State<Arc<Manager>>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let tags: Vec<String> = q.all("tag").into_iter().map(str::to_string).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let parsed = (|| Ok::<_, Error>((passing(&q)?, node_meta(&q)?, parse_filter(&q, filter::HEALTH_SERVICE)?)))();
    let (only_passing, meta, f) = match parsed {
        Ok(p) => p,
        Err(e) => return fail(&m, &e),
    };
    let key = shape_key(&m, &name, &q);
    let result = read(&m, &q, |s| {
        let index = s.service_index(&name);
        if let Some((at, body)) = SHARED.lock().expect("shared answers").get(&key)
            && *at == index
        {
            return (index, body.clone());
        }
        let (index, entries) = s.service_health(&name);
        let out: Vec<Value> = entries
            .iter()
            .filter(|e| has_tags(&e.instance.tags, &tags) && node_meta_matches(&e.node.meta, &meta))
            // Every check passing: warning is left out too, as Consul's ?passing does.
            .filter(|e| !only_passing || e.checks.iter().all(|c| c.check.status == Health::Passing))
            .map(shapes::health_entry)
            .filter(|v| f.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        let body = Bytes::from(serde_json::to_vec(&out).unwrap_or_else(|_| b"[]".to_vec()));
        let mut shared = SHARED.lock().expect("shared answers");
        if shared.len() >= SHARED_MAX {
            shared.clear();
        }
        shared.insert(key.clone(), (index, body.clone()));
        (index, body)
    })
    .await;
    match result {
        Ok((index, body)) => {
            let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            r.headers_mut().extend(crate::consul_headers(&m, index));
            r
        }
        Err(r) => r,
    }
}

async fn checks_answer(
    m: &Manager,
    q: &Query,
    view: impl Fn(&shoal_model::State) -> (u64, Vec<CheckView>),
) -> Response {
    let f = match parse_filter(q, filter::HEALTH_CHECK) {
        Ok(f) => f,
        Err(e) => return fail(m, &e),
    };
    let result = read(m, q, |s| {
        let (index, checks) = view(s);
        let out: Vec<Value> =
            checks.iter().map(shapes::check).filter(|v| f.as_ref().is_none_or(|f| f.matches(v))).collect();
        (index, out)
    })
    .await;
    match result {
        Ok((index, v)) => answer(m, index, v),
        Err(r) => r,
    }
}

/// `GET /v1/health/state/<any|passing|warning|critical>`.
pub async fn state(State(m): State<Arc<Manager>>, Path(state): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    let wanted = match state.as_str() {
        "any" => None,
        "passing" => Some("passing"),
        "warning" => Some("warning"),
        "critical" => Some("critical"),
        other => {
            return fail(
                &m,
                &Error::BadRequest(format!("Invalid check state {other:?}: use any, passing, warning or critical")),
            );
        }
    };
    checks_answer(&m, &q, |s| {
        let checks =
            s.all_checks().into_iter().filter(|c| wanted.is_none_or(|w| c.check.consul_status() == w)).collect();
        (s.checks_index(), checks)
    })
    .await
}

/// `GET /v1/health/checks/<service>`: the checks of a service's instances.
pub async fn checks(State(m): State<Arc<Manager>>, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    checks_answer(&m, &q, |s| (s.service_index(&name), s.service_checks(&name))).await
}

/// `GET /v1/health/node/<node>`: a node's checks, its own and its instances'.
pub async fn node(State(m): State<Arc<Manager>>, Path(node): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::parse(q.as_deref());
    checks_answer(&m, &q, |s| (s.checks_index(), s.node_checks(&node))).await
}
