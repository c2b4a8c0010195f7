//! The built-in proxy's route table: host and path matching, strip, balancing, and backends
//! shared across swaps. Table tests, the case's name in every assert.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::{Svc, view};
use shoal_router::proxy::{Lookup, Table};

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn table() -> Table {
    let v = view(
        7,
        &[
            Svc { name: "web", labels: &[], endpoints: vec![ep("10.0.0.1:80")] },
            Svc {
                name: "api",
                labels: &[
                    ("shoal.http.host", "API.example.com"),
                    ("shoal.http.path", "/api"),
                    ("shoal.http.strip", "true"),
                ],
                endpoints: vec![ep("10.0.1.1:80")],
            },
            Svc {
                name: "admin",
                labels: &[("shoal.http.host", "api.example.com"), ("shoal.http.path", "/api/admin")],
                endpoints: vec![ep("10.0.2.1:80")],
            },
            Svc { name: "wild", labels: &[("shoal.http.host", "*.example.com")], endpoints: vec![ep("10.0.3.1:80")] },
            Svc { name: "deep", labels: &[("shoal.http.host", "*.b.example.com")], endpoints: vec![ep("10.0.4.1:80")] },
            Svc { name: "hidden", labels: &[("shoal.http", "false")], endpoints: vec![ep("10.0.5.1:80")] },
            Svc { name: "down", labels: &[], endpoints: vec![] },
            Svc { name: "two", labels: &[("shoal.http.host", "a.test, b.test")], endpoints: vec![ep("10.0.6.1:80")] },
        ],
    );
    Table::build(&v, &Table::default())
}

#[test]
fn hosts_and_paths_match_as_the_templates_route() {
    let t = table();
    assert!(t.ready);
    assert_eq!(t.index, 7);
    // (case, host, path, service or "404-host" / "404-path")
    let cases = [
        ("default NAME.<domain>", "web.shoal", "/", "web"),
        ("host with a port", "web.shoal:8080", "/x", "web"),
        ("host in upper case", "WEB.Shoal", "/", "web"),
        ("trailing dot", "web.shoal.", "/", "web"),
        ("label host, path prefix", "api.example.com", "/api/users", "api"),
        ("longest path prefix wins", "api.example.com", "/api/admin/x", "admin"),
        ("string prefix, as path_beg", "api.example.com", "/apix", "api"),
        ("routed host, unrouted path", "api.example.com", "/other", "404-path"),
        ("exact beats wildcard", "api.example.com", "/api", "api"),
        ("wildcard, one label", "shop.example.com", "/", "wild"),
        ("wildcard, two labels", "x.y.example.com", "/", "wild"),
        ("longest wildcard wins", "x.b.example.com", "/", "deep"),
        ("wildcard needs a label", "example.com", "/", "404-host"),
        ("wildcard is not a substring", "badexample.com", "/", "404-host"),
        ("shoal.http=false is not routed", "hidden.shoal", "/", "404-host"),
        ("unknown host", "nope.shoal", "/", "404-host"),
        ("a service with no passing instance is routed", "down.shoal", "/", "down"),
        ("several hosts, first", "a.test", "/", "two"),
        ("several hosts, second", "b.test", "/", "two"),
        ("IPv6 literal host", "[::1]:80", "/", "404-host"),
    ];
    for (case, host, path, want) in cases {
        let got = match t.lookup(host, path) {
            Lookup::Route(r) => r.service.clone(),
            Lookup::UnknownHost => "404-host".into(),
            Lookup::UnknownPath => "404-path".into(),
        };
        assert_eq!(got, want, "case {case:?}: {host} {path}");
    }
}

#[test]
fn strip_removes_the_matched_prefix_only_when_asked() {
    let t = table();
    let route = |host: &str, path: &str| match t.lookup(host, path) {
        Lookup::Route(r) => r.clone(),
        other => panic!("{host}{path}: {other:?}"),
    };
    // (case, host, path, forwarded path)
    let cases = [
        ("strip a prefix", "api.example.com", "/api/users", "/users"),
        ("strip the whole path", "api.example.com", "/api", "/"),
        ("strip a string prefix", "api.example.com", "/apix", "/x"),
        ("no strip label", "api.example.com", "/api/admin/x", "/api/admin/x"),
        ("root route", "web.shoal", "/a/b", "/a/b"),
    ];
    for (case, host, path, want) in cases {
        assert_eq!(route(host, path).upstream_path(path), want, "case {case:?}");
    }
}

fn pool(n: usize, labels: &[(&str, &str)]) -> Table {
    let endpoints = (1..=n).map(|k| ep(&format!("10.1.0.{k}:80"))).collect();
    Table::build(&view(1, &[Svc { name: "web", labels, endpoints }]), &Table::default())
}

fn route(t: &Table) -> Arc<shoal_router::proxy::table::Route> {
    match t.lookup("web.shoal", "/") {
        Lookup::Route(r) => r.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn round_robin_takes_every_instance_in_turn() {
    for (case, n) in [("one instance", 1), ("three instances", 3), ("five instances", 5)] {
        let t = pool(n, &[]);
        let r = route(&t);
        let picks: Vec<usize> = (0..n * 20).map(|_| r.pick().unwrap()).collect();
        for (k, p) in picks.iter().enumerate() {
            assert_eq!(*p, k % n, "case {case:?}: pick {k}");
        }
    }
    let empty = Table::build(&view(1, &[Svc { name: "web", labels: &[], endpoints: vec![] }]), &Table::default());
    assert_eq!(route(&empty).pick(), None, "no instance: nothing to pick");
}

#[test]
fn least_requests_avoids_the_busy_instance_and_spreads_the_rest() {
    let t = pool(3, &[("shoal.http.balance", "least-requests")]);
    let r = route(&t);
    assert_eq!(r.balance, shoal_router::proxy::Balance::LeastRequests);
    // Instance 0 has 5 requests in flight: with two candidates always compared, it loses every time.
    let held: Vec<_> = (0..5).map(|_| r.backends[0].start()).collect();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(r.pick().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.get(&0), None, "the busy instance was picked: {counts:?}");
    assert!(counts[&1] > 100 && counts[&2] > 100, "the idle ones share the load: {counts:?}");
    drop(held);
    assert_eq!(r.backends[0].in_flight(), 0);
    // All idle: every instance is picked, none more than twice as often as another.
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for _ in 0..3000 {
        *counts.entry(r.pick().unwrap()).or_default() += 1;
    }
    let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
    assert!(counts.len() == 3 && *max < 2 * *min, "spread when idle: {counts:?}");
}

#[test]
fn a_new_table_shares_the_backends_still_in_the_catalog() {
    let first = pool(3, &[]);
    let r1 = route(&first);
    let _busy = r1.backends[1].start();
    // 10.1.0.1 leaves, 10.1.0.2 and .3 stay, 10.1.0.9 joins.
    let v = view(
        2,
        &[Svc { name: "web", labels: &[], endpoints: vec![ep("10.1.0.2:80"), ep("10.1.0.3:80"), ep("10.1.0.9:80")] }],
    );
    let second = Table::build(&v, &first);
    let r2 = route(&second);
    let eps: Vec<&str> = r2.backends.iter().map(|b| b.endpoint.as_str()).collect();
    assert_eq!(eps, ["10.1.0.2:80", "10.1.0.3:80", "10.1.0.9:80"]);
    assert!(Arc::ptr_eq(&r1.backends[1], &r2.backends[0]), "a staying backend is the same value");
    assert_eq!(r2.backends[0].in_flight(), 1, "its in-flight count carried over");
    assert_eq!(r2.backends[2].in_flight(), 0);
}
