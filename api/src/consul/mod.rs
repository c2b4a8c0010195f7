//! Consul's HTTP API as Consul's clients call it: the KV store (`/v1/kv`), the status endpoints,
//! the catalog (`/v1/catalog`), health (`/v1/health`) and the node's agent (`/v1/agent`).
//! Sessions and transactions land here too.
//!
//! ```text
//! request ─▶ body.rs (every spelling) ─▶ CatalogCommand ─▶ Manager::catalog_write
//!         ─▶ read(): linearize unless ?stale ─▶ State reads (model::catalog::read), blocking on ?index
//!            ─▶ shapes.rs (Consul's JSON) ─▶ ?tag / ?node-meta / ?passing / ?filter (filter.rs)
//! ```

pub mod agent;
pub(crate) mod body;
pub mod catalog;
pub mod filter;
pub mod health;
pub mod kv;
pub(crate) mod shapes;
pub mod status;

use axum::response::{IntoResponse, Response};
use shoal_model::State;
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;
use tokio::time::Instant;

use crate::query::{Consistency, Query, ReadOptions};
use crate::{consul_headers, error_response};

/// An error answered with the `X-Consul-*` headers clients parse on every response.
pub(crate) fn fail(m: &Manager, e: &Error) -> Response {
    error_response(e, Some(consul_headers(m, m.view().watch().index())))
}

/// One read with Consul's options: linearized unless `?stale`, and with `?index=N` held until
/// `view`'s index passes N (or `?wait` ends). `view` returns its own index: the index of what it
/// read, so a watcher wakes for changes to what it watches only.
pub(crate) async fn read<T>(m: &Manager, q: &Query, view: impl Fn(&State) -> (u64, T)) -> Result<(u64, T), Response> {
    let opts = ReadOptions::from_query(q).map_err(|e| fail(m, &e))?;
    if opts.consistency == Consistency::Linearizable {
        m.linearize().await.map_err(|e| fail(m, &e))?;
    }
    let state = m.view();
    Ok(match opts.index {
        None => state.read(&view),
        Some(min) => {
            let deadline = Instant::now() + opts.wait_with_jitter();
            state.watch().query(min, deadline, || state.read(&view)).await
        }
    })
}

/// A JSON answer with the headers of a read at `index`.
pub(crate) fn answer(m: &Manager, index: u64, body: impl serde::Serialize) -> Response {
    let mut r = axum::Json(body).into_response();
    r.headers_mut().extend(consul_headers(m, index));
    r
}

/// `?filter=` read against the element type `schema` (absent or empty: no filter); a filter that
/// does not parse or fit the type answers 400 with Consul's message.
pub(crate) fn parse_filter(q: &Query, schema: &'static filter::Schema) -> Result<Option<filter::Filter>, Error> {
    filter::from_query(q.get("filter"), schema).map_err(|e| Error::BadRequest(e.to_string()))
}

/// Refuses a `?dc=` (or body `Datacenter`) other than this cluster's, as Consul does (500).
pub(crate) fn check_dc(dc: Option<&str>) -> Result<(), Error> {
    match dc {
        Some(dc) if !dc.is_empty() && dc != shoal_model::catalog::DATACENTER => Err(Error::Internal(format!(
            "No path to datacenter {dc:?}: this cluster is {:?}",
            shoal_model::catalog::DATACENTER
        ))),
        _ => Ok(()),
    }
}

/// `?tag=` (repeatable; every one must match, ignoring case, as Consul) against `tags`.
pub(crate) fn has_tags(tags: &[impl AsRef<str>], wanted: &[&str]) -> bool {
    wanted.iter().all(|w| tags.iter().any(|t| t.as_ref().eq_ignore_ascii_case(w)))
}

/// `?node-meta=k:v` (repeatable; all must match) against a node's meta.
pub(crate) fn node_meta_matches(
    meta: &std::collections::BTreeMap<String, String>,
    wanted: &[(String, String)],
) -> bool {
    wanted.iter().all(|(k, v)| meta.get(k) == Some(v))
}

/// Parses every `?node-meta=k:v`.
pub(crate) fn node_meta(q: &Query) -> Result<Vec<(String, String)>, Error> {
    q.all("node-meta")
        .into_iter()
        .map(|kv| {
            kv.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::BadRequest(format!("invalid ?node-meta={kv:?}: use ?node-meta=key:value")))
        })
        .collect()
}
