//! The route table: an immutable value built from one [`View`] through [`crate::routes`], so the
//! proxy routes exactly as the shipped templates do. The feeder builds a new one on every catalog
//! change and swaps it in whole; a request reads one table from start to end.
//!
//! Matching: the host (port dropped, lower case) exactly, else the longest `*.suffix` wildcard
//! (`*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`); then the
//! longest path prefix among that host's routes (a plain string prefix, as HAProxy's `path_beg`
//! and Nginx's `location` in the templates). Labels read here only:
//!
//! | label | meaning | default |
//! |---|---|---|
//! | `shoal.http.strip` | `true`: the matched path prefix is removed before forwarding | kept |
//! | `shoal.http.balance` | `round-robin` or `least-requests` | `round-robin` |

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

use crate::routes::http_hosts;
use crate::view::View;

/// How a route picks among its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn.
    RoundRobin,
    /// The fewer requests in flight of two candidates (power of two choices).
    LeastRequests,
}

/// One passing instance. Shared between tables while its endpoint stays in the catalog, so its
/// in-flight count survives swaps.
#[derive(Debug)]
pub struct Backend {
    /// `address:port`.
    pub endpoint: String,
    /// The same, parsed (the upstream URI's authority).
    pub authority: Authority,
    in_flight: AtomicUsize,
}

impl Backend {
    fn new(endpoint: &str) -> Option<Backend> {
        let authority = endpoint.parse().ok()?;
        Some(Backend { endpoint: endpoint.to_string(), authority, in_flight: AtomicUsize::new(0) })
    }

    /// Requests sent to it whose response head has not come back yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on a [`Backend`].
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One service's route (shared by every host it answers).
#[derive(Debug)]
pub struct Route {
    /// The service.
    pub service: String,
    /// The path prefix it answers under.
    pub path: String,
    /// Whether the prefix is removed before forwarding.
    pub strip: bool,
    /// The policy.
    pub balance: Balance,
    /// Its passing instances (empty: 503).
    pub backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl Route {
    /// The index into `backends` of the first attempt (None: no instance). Retries take the
    /// following ones in turn.
    pub fn pick(&self) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        match self.balance {
            Balance::RoundRobin => Some(turn % n),
            Balance::LeastRequests => {
                if n == 1 {
                    return Some(0);
                }
                // Two distinct candidates spread by a cheap mix of the turn (no shared RNG).
                let h = (turn as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let a = (h >> 32) as usize % n;
                let b = (a + 1 + (h as u32 as usize) % (n - 1)) % n;
                let (la, lb) = (self.backends[a].in_flight(), self.backends[b].in_flight());
                Some(if lb < la { b } else { a })
            }
        }
    }

    /// The path to forward for `path` (the prefix removed when `strip`; never empty).
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.strip || self.path == "/" {
            return path.into();
        }
        match path.get(self.path.len()..) {
            Some(rest) if rest.starts_with('/') => rest.into(),
            Some(rest) => format!("/{rest}").into(),
            None => path.into(),
        }
    }
}

/// One host's routes, longest path first.
#[derive(Debug, Default)]
pub struct HostRoutes {
    routes: Vec<Arc<Route>>,
}

impl HostRoutes {
    /// The route with the longest prefix of `path`.
    pub fn route(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| path.starts_with(r.path.as_str()))
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route.
    Route(&'a Arc<Route>),
    /// No route has this host.
    UnknownHost,
    /// The host is routed, but not this path.
    UnknownPath,
}

/// The whole table.
#[derive(Debug, Default)]
pub struct Table {
    /// The catalog index it was built from.
    pub index: u64,
    /// False until the first catalog read (requests then get a 503 saying so).
    pub ready: bool,
    exact: HashMap<String, HostRoutes>,
    /// (".example.com", routes), longest suffix first.
    wildcards: Vec<(String, HostRoutes)>,
}

impl Table {
    /// The table of `view`. Backends whose endpoint is also in `previous` are shared with it.
    pub fn build(view: &View, previous: &Table) -> Table {
        let mut old: HashMap<&str, &Arc<Backend>> = HashMap::new();
        for hr in previous.exact.values().chain(previous.wildcards.iter().map(|(_, h)| h)) {
            for r in &hr.routes {
                for b in &r.backends {
                    old.insert(b.endpoint.as_str(), b);
                }
            }
        }
        let mut by_service: HashMap<String, Arc<Route>> = HashMap::new();
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for host in http_hosts(view) {
            let routes = host
                .routes
                .iter()
                .map(|r| {
                    by_service
                        .entry(r.service.clone())
                        .or_insert_with(|| {
                            let labels = view.labels.get(&r.service);
                            let label = |k: &str| labels.and_then(|l| l.get(k)).map(|v| v.trim().to_ascii_lowercase());
                            let strip = label("shoal.http.strip").is_some_and(|v| v == "true");
                            let balance = match label("shoal.http.balance").as_deref() {
                                Some("least-requests" | "least_requests" | "leastconn") => Balance::LeastRequests,
                                _ => Balance::RoundRobin,
                            };
                            let backends = r
                                .servers
                                .iter()
                                .filter_map(|s| match old.get(s.endpoint.as_str()) {
                                    Some(b) => Some(Arc::clone(b)),
                                    None => Backend::new(&s.endpoint).map(Arc::new),
                                })
                                .collect();
                            Arc::new(Route {
                                service: r.service.clone(),
                                path: r.path.clone(),
                                strip,
                                balance,
                                backends,
                                next: AtomicUsize::new(0),
                            })
                        })
                        .clone()
                })
                .collect();
            let entry = HostRoutes { routes };
            match host.host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => wildcards.push((suffix.to_string(), entry)),
                _ => {
                    exact.insert(host.host, entry);
                }
            }
        }
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Table { index: view.index, ready: true, exact, wildcards }
    }

    /// The route for `host` (as the client sent it: port and case are normalised here) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Lookup<'_> {
        let host = host_name(host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        let hr = self.exact.get(host).or_else(|| {
            self.wildcards.iter().find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str())).map(|(_, h)| h)
        });
        match hr {
            None => Lookup::UnknownHost,
            Some(hr) => hr.route(path).map(Lookup::Route).unwrap_or(Lookup::UnknownPath),
        }
    }

    /// How many host names (exact and wildcard) it routes.
    pub fn hosts(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }
}

/// `host` without its port (`[v6]:port` keeps the brackets off too) and a trailing dot.
fn host_name(host: &str) -> &str {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h.strip_suffix('.').unwrap_or(h)
}
