//! Query-string parsing with Consul's conventions and clear one-line errors.

use std::time::Duration;

use shoal_registry::Error;

/// The datacenter name Shoal answers to.
pub use shoal_model::catalog::DATACENTER;
/// Default blocking wait (Consul: 5 minutes).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Longest blocking wait (Consul: 10 minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// Parsed `?a=b&c` pairs, in order.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string (percent-decoding names and values).
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        Self { pairs }
    }

    /// The value of `name`, if present (the last one wins).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter (`?tag=a&tag=b`), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// A presence flag such as `?recurse`: absent → false; empty → true; otherwise Go's
    /// `strconv.ParseBool` spellings (`1 t T TRUE true True`, `0 f F FALSE false False`), because
    /// real clients send them (py-consul sends `keys=True`).
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        match self.get(name) {
            None => Ok(false),
            Some("" | "1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(other) => {
                Err(Error::BadRequest(format!("invalid value for ?{name}: {other:?} (use ?{name} or ?{name}=true)")))
            }
        }
    }

    /// A non-negative integer such as `?cas=12`.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                Error::BadRequest(format!("invalid value for ?{name}: {v:?} is not a non-negative integer"))
            }),
        }
    }

    /// A duration with a unit: `ms`, `s`, `m` or `h` (Consul's `?wait=10s`).
    pub fn duration(&self, name: &str) -> Result<Option<Duration>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => shoal_model::duration::parse(v).map(Some).ok_or_else(|| {
                Error::BadRequest(format!(
                    "invalid value for ?{name}: {v:?} (use a number with a unit: 500ms, 10s, 5m)"
                ))
            }),
        }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable (the default and `?consistent`).
    Linearizable,
    /// Any manager's local state (`?stale`).
    Stale,
}

/// The options every read endpoint shares.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Consistency mode.
    pub consistency: Consistency,
    /// `?index=N`: block until the result's index is past N.
    pub index: Option<u64>,
    /// `?wait=`: how long to block, capped at [`MAX_WAIT`].
    pub wait: Duration,
}

impl ReadOptions {
    /// Reads `stale`, `consistent`, `index`, `wait` and `dc` from `q`.
    pub fn from_query(q: &Query) -> Result<Self, Error> {
        let stale = q.flag("stale")?;
        let consistent = q.flag("consistent")?;
        if stale && consistent {
            return Err(Error::BadRequest("cannot use ?stale with ?consistent: pick one".into()));
        }
        if let Some(dc) = q.get("dc")
            && !dc.is_empty()
            && dc != DATACENTER
        {
            return Err(Error::Internal(format!("No path to datacenter {dc:?}: this cluster is {DATACENTER:?}")));
        }
        let index = q.u64("index")?;
        let wait = q.duration("wait")?.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        Ok(Self { consistency: if stale { Consistency::Stale } else { Consistency::Linearizable }, index, wait })
    }

    /// The wait plus Consul's jitter of up to wait/16.
    pub fn wait_with_jitter(&self) -> Duration {
        let jitter_max = self.wait.as_millis() as u64 / 16;
        let jitter = if jitter_max == 0 { 0 } else { rand::random_range(0..=jitter_max) };
        self.wait + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let q = Query::parse(Some("recurse&keys=true&raw=0&stale=maybe&sep=%2F&a=True&b=F"));
        assert_eq!(q.flag("recurse"), Ok(true));
        assert_eq!(q.flag("a"), Ok(true));
        assert_eq!(q.flag("b"), Ok(false));
        assert_eq!(q.flag("keys"), Ok(true));
        assert_eq!(q.flag("raw"), Ok(false));
        assert_eq!(q.flag("absent"), Ok(false));
        assert!(q.flag("stale").unwrap_err().to_string().contains("invalid value for ?stale"));
        assert_eq!(q.get("sep"), Some("/"));
    }

    #[test]
    fn read_options() {
        type Want = Result<(Consistency, Option<u64>, Duration), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("", Ok((Consistency::Linearizable, None, DEFAULT_WAIT))),
            ("stale&index=7&wait=2s", Ok((Consistency::Stale, Some(7), Duration::from_secs(2)))),
            ("consistent&wait=20m", Ok((Consistency::Linearizable, None, MAX_WAIT))),
            ("stale&consistent", Err("cannot use ?stale with ?consistent")),
            ("index=-1", Err("invalid value for ?index")),
            ("wait=10", Err("invalid value for ?wait")),
            ("dc=dc1", Ok((Consistency::Linearizable, None, DEFAULT_WAIT))),
            ("dc=eu", Err("No path to datacenter")),
        ];
        for (input, want) in cases {
            let got = ReadOptions::from_query(&Query::parse(Some(input)));
            match (got, want) {
                (Ok(o), Ok(w)) => assert_eq!((o.consistency, o.index, o.wait), *w, "case {input:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "case {input:?}: {e}"),
                (got, want) => panic!("case {input:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
