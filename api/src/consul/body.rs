//! Request bodies in every spelling Consul's clients send: Go's decoder matches field names
//! case-insensitively and Consul translates snake_case (`tagged_addresses`, `deregister_critical_service_after`),
//! so py-consul's `{"name", "checks": [{"ttl"}]}` and the Go client's `{"Name", "Checks": [{"TTL"}]}`
//! mean the same. Fields are looked up by name ignoring case and underscores; the keys of user maps
//! (`Meta`, `NodeMeta`) are data and are kept as sent.
//!
//! Every error names the field and says what was expected, and nothing is written for a body that
//! does not read whole.

use std::collections::BTreeMap;

use serde_json::Value;
use shoal_model::catalog::{CheckDef, CheckKind, CheckSpec, Health, InstanceSpec, Weights};
use shoal_registry::Error;

fn norm(s: &str) -> String {
    s.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// A JSON object read by field name in any of Consul's spellings.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a> {
    map: &'a serde_json::Map<String, Value>,
    /// Where this object sits, for messages (`Check`, `Checks[1]`).
    path: &'a str,
}

fn bad(msg: String) -> Error {
    Error::BadRequest(msg)
}

impl<'a> Obj<'a> {
    /// The body as an object.
    pub(crate) fn root(v: &'a Value, what: &'a str) -> Result<Obj<'a>, Error> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: what }),
            other => Err(bad(format!("request decode failed: {what} must be a JSON object, got {}", kind(other)))),
        }
    }

    fn raw(&self, names: &[&str]) -> Option<&'a Value> {
        let wanted: Vec<String> = names.iter().map(|n| norm(n)).collect();
        self.map.iter().find(|(k, _)| wanted.contains(&norm(k))).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    fn field_name(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) }
    }

    /// A string field (absent: `None`).
    pub(crate) fn str(&self, name: &str) -> Result<Option<String>, Error> {
        self.str_any(&[name])
    }

    /// A string field under one of several names (Consul's `ID`/`CheckID`, `Args`/`ScriptArgs`).
    pub(crate) fn str_any(&self, names: &[&str]) -> Result<Option<String>, Error> {
        match self.raw(names) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be a string, got {}",
                self.field_name(names[0]),
                kind(other)
            ))),
        }
    }

    /// A boolean field (absent: false).
    pub(crate) fn bool(&self, name: &str) -> Result<bool, Error> {
        match self.raw(&[name]) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be true or false, got {}",
                self.field_name(name),
                kind(other)
            ))),
        }
    }

    /// A non-negative integer field that fits `max`.
    pub(crate) fn uint(&self, name: &str, max: u64) -> Result<Option<u64>, Error> {
        match self.raw(&[name]) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v <= max) => Ok(n.as_u64()),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be an integer from 0 to {max}, got {other}",
                self.field_name(name)
            ))),
        }
    }

    /// A list of strings (absent: empty).
    pub(crate) fn strings(&self, names: &[&str]) -> Result<Vec<String>, Error> {
        match self.raw(names) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(format!(
                        "request decode failed: {} must be a list of strings, found {}",
                        self.field_name(names[0]),
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be a list of strings, got {}",
                self.field_name(names[0]),
                kind(other)
            ))),
        }
    }

    /// A map of strings (absent: empty); its keys are kept as sent.
    pub(crate) fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        match self.raw(&[name]) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(bad(format!(
                        "request decode failed: {}[{k:?}] must be a string, got {}",
                        self.field_name(name),
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be an object of strings, got {}",
                self.field_name(name),
                kind(other)
            ))),
        }
    }

    /// A nested object.
    pub(crate) fn obj(&self, name: &str) -> Result<Option<Obj<'a>>, Error> {
        match self.raw(&[name]) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj { map, path: self.path })),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be an object, got {}",
                self.field_name(name),
                kind(other)
            ))),
        }
    }

    /// A list of objects (absent: empty).
    pub(crate) fn objs(&self, name: &str) -> Result<Vec<Obj<'a>>, Error> {
        match self.raw(&[name]) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::Object(map) => Ok(Obj { map, path: self.path }),
                    other => Err(bad(format!(
                        "request decode failed: {} must be a list of objects, found {}",
                        self.field_name(name),
                        kind(other)
                    ))),
                })
                .collect(),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be a list of objects, got {}",
                self.field_name(name),
                kind(other)
            ))),
        }
    }

    /// A duration: Go's `"10s"`/`"1m30s"`/`"500ms"` strings, or a number of nanoseconds (what Go's
    /// `time.Duration` marshals to). Returns milliseconds.
    pub(crate) fn duration_ms(&self, name: &str) -> Result<Option<u64>, Error> {
        match self.raw(&[name]) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => go_duration_ms(s).map(Some).ok_or_else(|| {
                bad(format!(
                    "request decode failed: {} = {s:?} is not a duration (use e.g. \"10s\", \"1m30s\", \"500ms\")",
                    self.field_name(name)
                ))
            }),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().map(|ns| ns / 1_000_000)),
            Some(other) => Err(bad(format!(
                "request decode failed: {} must be a duration such as \"10s\", got {other}",
                self.field_name(name)
            ))),
        }
    }

    /// The object at `path` (for nested messages).
    pub(crate) fn at(self, path: &'a str) -> Obj<'a> {
        Obj { map: self.map, path }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Go's duration syntax (`300ms`, `1.5h`, `2h45m`, `10s`); `None` if it does not parse or is negative.
pub(crate) fn go_duration_ms(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num.parse().ok()?;
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_ns += value * scale;
        rest = tail;
    }
    Some((total_ns / 1e6).round() as u64)
}

/// The check types Consul has that Shoal does not run.
const UNSUPPORTED_CHECKS: &[&str] = &["GRPC", "H2PING", "UDP", "OSService", "AliasService", "AliasNode"];

/// Reads one check definition. `service` is the instance it belongs to (agent registrations),
/// used for the default ID and name; `address` resolves a script's container.
pub(crate) fn check_spec(o: Obj, default_id: &str, default_name: &str) -> Result<CheckSpec, Error> {
    let field = |n: &str| o.field_name(n);
    for t in UNSUPPORTED_CHECKS {
        if o.raw(&[t]).is_some() {
            return Err(bad(format!(
                "{}: {t} checks are not supported by Shoal; use HTTP, TCP, Args (run in the container), TTL or DockerContainerID",
                o.path
            )));
        }
    }
    let interval_ms = o.duration_ms("Interval")?.unwrap_or(0);
    let timeout_ms = o.duration_ms("Timeout")?.unwrap_or(0);
    let http = o.str("HTTP")?;
    let tcp = o.str("TCP")?;
    let args = o.strings(&["Args", "ScriptArgs"])?;
    let ttl = o.duration_ms("TTL")?;
    let docker = o.str("DockerContainerID")?;
    let kinds = [http.is_some(), tcp.is_some(), !args.is_empty(), ttl.is_some()].iter().filter(|k| **k).count();
    if kinds > 1 {
        return Err(bad(format!("{}: give one of HTTP, TCP, Args or TTL, not several", o.path)));
    }
    let kind = if let Some(url) = http {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(format!("{} = {url:?} must be an http:// or https:// URL", field("HTTP"))));
        }
        let mut headers = BTreeMap::new();
        if let Some(h) = o.obj("Header")? {
            for (k, v) in h.map {
                let values = match v {
                    Value::Array(vs) => vs.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                    Value::String(s) => vec![s.clone()],
                    _ => return Err(bad(format!("{}[{k:?}] must be a list of strings", field("Header")))),
                };
                headers.insert(k.clone(), values);
            }
        }
        CheckKind::Http {
            url,
            method: o.str("Method")?.filter(|m| !m.is_empty()).unwrap_or_else(|| "GET".into()),
            headers,
            tls_skip_verify: o.bool("TLSSkipVerify")?,
        }
    } else if let Some(addr) = tcp {
        if !addr.contains(':') {
            return Err(bad(format!("{} = {addr:?} must be host:port", field("TCP"))));
        }
        CheckKind::Tcp { addr }
    } else if !args.is_empty() {
        CheckKind::Exec { args, container: docker.unwrap_or_default() }
    } else if let Some(ttl_ms) = ttl {
        CheckKind::Ttl { ttl_ms }
    } else if let Some(container) = docker {
        CheckKind::Docker { container }
    } else {
        return Err(bad(format!(
            "{}: unknown check type: give one of HTTP, TCP, Args, TTL or DockerContainerID",
            o.path
        )));
    };
    if kind.is_probed() && interval_ms == 0 {
        return Err(bad(format!(
            "{}: a {} check needs an Interval greater than 0 (e.g. \"10s\")",
            o.path,
            kind.type_name()
        )));
    }
    let status = match o.str("Status")? {
        None => Health::Critical,
        Some(s) if s.is_empty() => Health::Critical,
        Some(s) => Health::parse_status(&s).map_err(|e| bad(format!("{}: {e}", field("Status"))))?,
    };
    let u32_field = |n: &str| o.uint(n, u64::from(u32::MAX)).map(|v| v.unwrap_or(0) as u32);
    Ok(CheckSpec {
        id: o.str_any(&["CheckID", "ID"])?.filter(|s| !s.is_empty()).unwrap_or_else(|| default_id.to_string()),
        name: o.str("Name")?.filter(|s| !s.is_empty()).unwrap_or_else(|| default_name.to_string()),
        notes: o.str("Notes")?.unwrap_or_default(),
        def: CheckDef {
            kind,
            interval_ms,
            timeout_ms,
            deregister_after_ms: o.duration_ms("DeregisterCriticalServiceAfter")?,
            success_before_passing: u32_field("SuccessBeforePassing")?,
            failures_before_warning: u32_field("FailuresBeforeWarning")?,
            failures_before_critical: u32_field("FailuresBeforeCritical")?,
        },
        status,
        output: o.str("Output")?.unwrap_or_default(),
    })
}

/// Reads a service definition (`/v1/agent/service/register`, the `Service` of `/v1/catalog/register`),
/// with its checks when `with_checks`.
pub(crate) fn instance_spec(o: Obj, with_checks: bool) -> Result<InstanceSpec, Error> {
    let name = o.str_any(&["Name", "Service"])?.unwrap_or_default();
    if name.is_empty() {
        return Err(bad("request decode failed: the service needs a Name".into()));
    }
    let id = o.str("ID")?.filter(|s| !s.is_empty()).unwrap_or_else(|| name.clone());
    let port = o.uint("Port", u64::from(u16::MAX))?.unwrap_or(0) as u16;
    let weights = match o.obj("Weights")? {
        None => Weights::default(),
        Some(w) => Weights {
            passing: w.uint("Passing", 65535)?.unwrap_or(1).max(1) as u32,
            warning: w.uint("Warning", 65535)?.unwrap_or(1) as u32,
        },
    };
    let mut checks = Vec::new();
    if with_checks {
        let mut defs: Vec<Obj> = Vec::new();
        if let Some(c) = o.obj("Check")? {
            defs.push(c.at("Check"));
        }
        defs.extend(o.objs("Checks")?.into_iter().map(|c| c.at("Checks[]")));
        let several = defs.len() > 1;
        for (i, c) in defs.into_iter().enumerate() {
            let default_id = if several { format!("service:{id}:{}", i + 1) } else { format!("service:{id}") };
            checks.push(check_spec(c, &default_id, &format!("Service '{name}' check"))?);
        }
    }
    let spec = InstanceSpec {
        id,
        name,
        tags: o.strings(&["Tags"])?,
        address: o.str("Address")?.unwrap_or_default(),
        port,
        meta: o.string_map("Meta")?,
        weights,
        enable_tag_override: o.bool("EnableTagOverride")?,
        task_id: None,
        container_id: None,
        checks,
    };
    shoal_model::catalog::validate_instance(&spec).map_err(|r| bad(r.message))?;
    Ok(spec)
}

/// Parses a JSON body, with Consul's message when it is not JSON.
pub(crate) fn parse(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("request decode failed: the body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("request decode failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_the_same() {
        let bodies = [
            r#"{"Name":"web","ID":"web-1","Tags":["a"],"Port":80,"Meta":{"Build_Id":"7"},"Check":{"HTTP":"http://127.0.0.1/health","Interval":"10s","DeregisterCriticalServiceAfter":"90m"}}"#,
            r#"{"name":"web","id":"web-1","tags":["a"],"port":80,"meta":{"Build_Id":"7"},"check":{"http":"http://127.0.0.1/health","interval":"10s","deregister_critical_service_after":"90m"}}"#,
            r#"{"NAME":"web","Id":"web-1","tags":["a"],"Port":80,"Meta":{"Build_Id":"7"},"checks":[{"HTTP":"http://127.0.0.1/health","interval":10000000000,"DeregisterCriticalServiceAfter":"1h30m"}]}"#,
        ];
        let specs: Vec<InstanceSpec> = bodies
            .iter()
            .map(|b| instance_spec(Obj::root(&parse(b.as_bytes()).unwrap(), "").unwrap(), true).unwrap())
            .collect();
        assert_eq!(specs[0], specs[1]);
        assert_eq!(specs[0], specs[2]);
        assert_eq!(specs[0].meta["Build_Id"], "7", "meta keys are data: kept as sent");
        assert_eq!(specs[0].checks[0].id, "service:web-1");
        assert_eq!(specs[0].checks[0].def.deregister_after_ms, Some(90 * 60_000));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let cases = [
            ("not json", "{", "request decode failed"),
            ("empty", "  ", "body is empty"),
            ("a list", "[]", "must be a JSON object"),
            ("no name", r#"{"ID":"x"}"#, "needs a Name"),
            ("port too big", r#"{"Name":"w","Port":70000}"#, "Port must be an integer from 0 to 65535"),
            ("tags not strings", r#"{"Name":"w","Tags":[1]}"#, "Tags must be a list of strings"),
            ("unknown check type", r#"{"Name":"w","Check":{"Interval":"10s"}}"#, "unknown check type"),
            ("grpc", r#"{"Name":"w","Check":{"GRPC":"x:1","Interval":"10s"}}"#, "GRPC checks are not supported"),
            (
                "zero interval",
                r#"{"Name":"w","Check":{"HTTP":"http://x/","Interval":"0s"}}"#,
                "Interval greater than 0",
            ),
            ("no interval", r#"{"Name":"w","Check":{"TCP":"x:1"}}"#, "Interval greater than 0"),
            ("bad duration", r#"{"Name":"w","Check":{"TTL":"ten"}}"#, "is not a duration"),
            ("bad status", r#"{"Name":"w","Check":{"TTL":"10s","Status":"ok"}}"#, "invalid check status"),
            ("two types", r#"{"Name":"w","Check":{"TTL":"10s","TCP":"x:1","Interval":"1s"}}"#, "not several"),
            ("bad meta", r#"{"Name":"w","Meta":{"a.b":"1"}}"#, "meta key"),
        ];
        for (name, body, words) in cases {
            let err = parse(body.as_bytes())
                .and_then(|v| Obj::root(&v, "").and_then(|o| instance_spec(o, true)).map(|_| ()))
                .expect_err(name);
            assert!(err.to_string().contains(words), "{name}: {err}");
            assert_eq!(err.http_status(), 400, "{name}");
        }
    }

    #[test]
    fn go_durations() {
        let cases = [
            ("10s", Some(10_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1.5h", Some(5_400_000)),
            ("0", Some(0)),
            ("10", None),
            ("", None),
            ("-1s", None),
            ("5x", None),
        ];
        for (s, want) in cases {
            assert_eq!(go_duration_ms(s), want, "{s:?}");
        }
    }
}
