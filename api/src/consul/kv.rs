//! Consul's KV endpoints: `GET|PUT|DELETE /v1/kv/<key>`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use tokio::time::Instant;

use crate::query::{Consistency, Query, ReadOptions};
use crate::{consul_headers, error_response};
use shoal_model::State as RegistryState;
use shoal_model::kv::{KvEntry, MAX_VALUE_BYTES};
use shoal_model::{Command, CommandResult};
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;

/// One KV entry as Consul serialises it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair<'a> {
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
}

impl<'a> KvPair<'a> {
    fn new(key: &'a str, e: &KvEntry) -> Self {
        Self {
            create_index: e.create_index,
            modify_index: e.modify_index,
            lock_index: e.lock_index,
            key,
            flags: e.flags,
            value: (!e.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
        }
    }
}

/// What a GET asked for.
struct GetRequest {
    key: String,
    recurse: bool,
    keys: bool,
    separator: Option<String>,
    raw: bool,
    opts: ReadOptions,
}

impl GetRequest {
    fn parse(key: String, q: &Query) -> Result<Self, Error> {
        Ok(Self {
            key,
            recurse: q.flag("recurse")?,
            keys: q.flag("keys")?,
            separator: q.get("separator").map(str::to_string),
            raw: q.flag("raw")?,
            opts: ReadOptions::from_query(q)?,
        })
    }

    /// The answer and its index, from one consistent look at the state.
    fn view(&self, s: &RegistryState) -> (u64, Response) {
        let kv = &s.kv;
        if self.keys {
            let index = kv.query_index(&self.key, true);
            let keys = kv.keys(&self.key, self.separator.as_deref());
            if keys.is_empty() {
                return (index, StatusCode::NOT_FOUND.into_response());
            }
            return (index, axum::Json(keys).into_response());
        }
        if self.recurse {
            let index = kv.query_index(&self.key, true);
            let pairs: Vec<KvPair> = kv.list(&self.key).map(|(k, e)| KvPair::new(k, e)).collect();
            if pairs.is_empty() {
                return (index, StatusCode::NOT_FOUND.into_response());
            }
            return (index, axum::Json(pairs).into_response());
        }
        let index = kv.query_index(&self.key, false);
        match kv.get(&self.key) {
            None => (index, StatusCode::NOT_FOUND.into_response()),
            Some(e) if self.raw => {
                let mut r = e.value.clone().into_response();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                (index, r)
            }
            Some(e) => (index, axum::Json([KvPair::new(&self.key, e)]).into_response()),
        }
    }
}

pub(crate) async fn get(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    get_inner(m, String::new(), q).await
}

pub(crate) async fn get_key(State(m): State<Arc<Manager>>, Path(key): Path<String>, RawQuery(q): RawQuery) -> Response {
    get_inner(m, key, q).await
}

async fn get_inner(m: Arc<Manager>, key: String, q: Option<String>) -> Response {
    let req = match GetRequest::parse(key, &Query::parse(q.as_deref())) {
        Ok(r) => r,
        Err(e) => return error_response(&e, Some(consul_headers(&m, m.view().watch().index()))),
    };
    if req.opts.consistency == Consistency::Linearizable
        && let Err(e) = m.linearize().await
    {
        return error_response(&e, Some(consul_headers(&m, m.view().watch().index())));
    }
    let view = m.view();
    let (index, mut resp) = match req.opts.index {
        None => view.read(|s| req.view(s)),
        Some(min) => {
            let deadline = Instant::now() + req.opts.wait_with_jitter();
            view.watch().query(min, deadline, || view.read(|s| req.view(s))).await
        }
    };
    resp.headers_mut().extend(consul_headers(&m, index));
    resp
}

pub(crate) async fn put(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    put_inner(m, String::new(), q, body).await
}

pub(crate) async fn put_key(
    State(m): State<Arc<Manager>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    put_inner(m, key, q, body).await
}

fn bool_response(r: CommandResult) -> Response {
    match r {
        CommandResult::Refused(r) => error_response(&Error::BadRequest(r.message), None),
        other => axum::Json(other.succeeded()).into_response(),
    }
}

async fn put_inner(m: Arc<Manager>, key: String, q: Option<String>, body: Bytes) -> Response {
    let q = Query::parse(q.as_deref());
    let cmd = (|| -> Result<Command, Error> {
        if key.is_empty() {
            return Err(Error::BadRequest("missing key name: PUT /v1/kv/<key>".into()));
        }
        if q.get("acquire").is_some() || q.get("release").is_some() {
            return Err(Error::BadRequest(
                "sessions and locks (?acquire, ?release) are not supported yet; use ?cas for optimistic updates".into(),
            ));
        }
        if body.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLarge(format!(
                "value of {} bytes exceeds the {MAX_VALUE_BYTES} byte limit; store large data elsewhere and keep a reference here",
                body.len()
            )));
        }
        let flags = q.u64("flags")?.unwrap_or(0);
        let cas = q.u64("cas")?;
        ReadOptions::from_query(&q)?;
        Ok(Command::KvSet { key, value: body.to_vec(), flags, cas })
    })();
    match cmd {
        Err(e) => error_response(&e, None),
        Ok(cmd) => match m.write(cmd).await {
            Ok(r) => bool_response(r),
            Err(e) => error_response(&e, None),
        },
    }
}

pub(crate) async fn delete(State(m): State<Arc<Manager>>, RawQuery(q): RawQuery) -> Response {
    delete_inner(m, String::new(), q).await
}

pub(crate) async fn delete_key(
    State(m): State<Arc<Manager>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    delete_inner(m, key, q).await
}

async fn delete_inner(m: Arc<Manager>, key: String, q: Option<String>) -> Response {
    let q = Query::parse(q.as_deref());
    let cmd = (|| -> Result<Command, Error> {
        let recurse = q.flag("recurse")?;
        let cas = q.u64("cas")?;
        if key.is_empty() && !recurse {
            return Err(Error::BadRequest(
                "missing key name: DELETE /v1/kv/<key> (or ?recurse to delete a whole prefix)".into(),
            ));
        }
        if recurse && cas.is_some() {
            return Err(Error::BadRequest("?cas applies to a single key and cannot be combined with ?recurse".into()));
        }
        ReadOptions::from_query(&q)?;
        Ok(Command::KvDelete { key, recurse, cas })
    })();
    match cmd {
        Err(e) => error_response(&e, None),
        Ok(cmd) => match m.write(cmd).await {
            Ok(r) => bool_response(r),
            Err(e) => error_response(&e, None),
        },
    }
}
