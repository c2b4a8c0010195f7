//! Rendering: a pure function of a template's text and a [`View`]. Jinja2 syntax (minijinja),
//! `trim_blocks` and `lstrip_blocks` on (block tags leave no blank lines in a config), the
//! trailing newline kept, no HTML escaping, and undefined names are errors (a typo must not
//! render an empty backend).
//!
//! A template sees:
//! - `services`: service name → its passing instances (`id`, `service`, `node`, `address`,
//!   `port`, `tags`, `meta`, `status`, `labels`, `weight`); a service none of whose instances
//!   passes is there with an empty list;
//! - `service(name, tag=None, passing=True)`: one service's instances (all of them with
//!   `passing=False`), `labels(name)`: a service's labels, `nodes`: every node (`name`,
//!   `address`, `meta`), `domain`, `index`;
//! - `kv(key)` (the value, or none), `kv_tree(prefix)` (`key` relative to the prefix, `path`,
//!   `value`), `env(name)` (undefined when unset, so `env("X") | default("y")` works);
//! - `http_routes()` and `http_hosts()`: the routes the shipped templates write (see
//!   [`crate::routes`]: the `shoal.http.*` labels);
//! - filters `sanitize` (a name HAProxy and Nginx accept: `[A-Za-z0-9_-]`), `by_tag` (instances
//!   → tag → instances), `by_meta(key)` (instances → value → instances), and minijinja's own
//!   (`sort(attribute=…)`, `groupby`, `selectattr`, `default`, `unique`, `join`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use crate::view::View;

/// The KV keys and prefixes a render read (what the runner fetches and watches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deps {
    /// `kv(key)` calls.
    pub keys: BTreeSet<String>,
    /// `kv_tree(prefix)` calls.
    pub prefixes: BTreeSet<String>,
}

impl Deps {
    /// Whether `view` holds every key and prefix of `self`.
    pub fn satisfied_by(&self, view: &View) -> bool {
        self.keys.iter().all(|k| view.kv.contains_key(k)) && self.prefixes.iter().all(|p| view.kv_trees.contains_key(p))
    }
}

/// A finished render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The output.
    pub text: String,
    /// What it read from the KV store.
    pub deps: Deps,
}

/// Why a template did not render: its name, the line, and minijinja's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// Renders `source` (named `name` in errors) against `view`, reading the environment through
/// `env_var`.
pub fn render(
    name: &str,
    source: &str,
    view: &View,
    env_var: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Rendered, RenderError> {
    let view = Arc::new(view.clone());
    let deps = Arc::new(Mutex::new(Deps::default()));
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| RenderError(e.to_string()))?;
    env.set_syntax(syntax);
    // Environment variables are read up front into the closure: the render stays a function of
    // its inputs (and `env_var` need not be 'static).
    let env_snapshot: BTreeMap<String, Option<String>> = env_names(source)
        .into_iter()
        .map(|n| {
            let v = env_var(&n);
            (n, v)
        })
        .collect();

    env.add_global("services", ser(view.passing_services()));
    env.add_global("nodes", ser(view.nodes.clone()));
    env.add_global("domain", view.domain.clone());
    env.add_global("index", view.index);
    {
        let view = view.clone();
        env.add_function("service", move |name: String, tag: Option<String>, kwargs: Kwargs| -> Result<Value, Error> {
            let tag = match tag {
                Some(t) => Some(t),
                None => kwargs.get::<Option<String>>("tag")?,
            };
            let passing = kwargs.get::<Option<bool>>("passing")?.unwrap_or(true);
            kwargs.assert_all_used()?;
            Ok(ser(view.service(&name, tag.as_deref(), passing)))
        });
    }
    {
        let view = view.clone();
        env.add_function("labels", move |name: String| ser(view.labels.get(&name).cloned().unwrap_or_default()));
    }
    {
        let (view, deps) = (view.clone(), deps.clone());
        env.add_function("kv", move |key: String| {
            let key = key.trim_start_matches('/').to_string();
            let value = view.kv.get(&key).cloned().flatten();
            deps.lock().expect("deps").keys.insert(key);
            Value::from(value)
        });
    }
    {
        let (view, deps) = (view.clone(), deps.clone());
        env.add_function("kv_tree", move |prefix: String| {
            let prefix = prefix.trim_start_matches('/').to_string();
            let entries: Vec<BTreeMap<&str, String>> = view
                .kv_trees
                .get(&prefix)
                .map(|list| {
                    list.iter()
                        .map(|(path, value)| {
                            let key = path.strip_prefix(&prefix).unwrap_or(path).trim_start_matches('/');
                            BTreeMap::from([("key", key.to_string()), ("path", path.clone()), ("value", value.clone())])
                        })
                        .collect()
                })
                .unwrap_or_default();
            deps.lock().expect("deps").prefixes.insert(prefix);
            ser(entries)
        });
    }
    env.add_function("env", move |name: String| match env_snapshot.get(&name) {
        Some(Some(v)) => Value::from(v.clone()),
        _ => Value::UNDEFINED,
    });
    {
        let view = view.clone();
        env.add_function("http_routes", move || ser(crate::routes::http_routes(&view)));
    }
    {
        let view = view.clone();
        env.add_function("http_hosts", move || ser(crate::routes::http_hosts(&view)));
    }
    env.add_filter("sanitize", sanitize);
    env.add_filter("by_tag", by_tag);
    env.add_filter("by_meta", by_meta);

    let template = env.template_from_named_str(name, source).map_err(|e| describe(name, &e))?;
    let text = template.render(()).map_err(|e| describe(name, &e))?;
    let deps = deps.lock().expect("deps").clone();
    Ok(Rendered { text, deps })
}

/// The names `env("NAME")` is called with (literal strings: what a template can read).
fn env_names(source: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("env(") {
        rest = &rest[at + 4..];
        let trimmed = rest.trim_start();
        let Some(q) = trimmed.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
        if let Some(end) = trimmed[1..].find(q) {
            out.insert(trimmed[1..1 + end].to_string());
        }
    }
    out
}

/// `name: line N: reason` (with minijinja's detail of where it failed).
fn describe(name: &str, e: &Error) -> RenderError {
    let line = e.line().map(|l| format!("line {l}: ")).unwrap_or_default();
    let mut msg = format!("{name}: {line}{}", e.kind());
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(" (caused by: {s})"));
        source = s.source();
    }
    RenderError(msg)
}

/// A name HAProxy (backend, server) and Nginx (upstream) accept: every character outside
/// `[A-Za-z0-9_-]` becomes `_`.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn group(instances: &Value, key_of: impl Fn(&Value) -> Vec<String>) -> Result<Value, Error> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for item in instances.try_iter()? {
        for k in key_of(&item) {
            groups.entry(k).or_default().push(item.clone());
        }
    }
    Ok(ser(groups))
}

fn by_tag(instances: Value) -> Result<Value, Error> {
    group(&instances, |i| {
        i.get_attr("tags")
            .ok()
            .and_then(|t| t.try_iter().ok().map(|it| it.map(|v| v.to_string()).collect()))
            .unwrap_or_default()
    })
}

fn by_meta(instances: Value, key: String) -> Result<Value, Error> {
    if key.is_empty() {
        return Err(Error::new(ErrorKind::InvalidOperation, "by_meta needs a meta key, e.g. by_meta(\"version\")"));
    }
    group(&instances, |i| {
        i.get_attr("meta")
            .ok()
            .and_then(|m| m.get_attr(&key).ok())
            .filter(|v| !v.is_undefined() && !v.is_none())
            .map(|v| vec![v.to_string()])
            .unwrap_or_default()
    })
}

fn ser<T: serde::Serialize>(x: T) -> Value {
    Value::from(minijinja::value::Serde(x))
}
