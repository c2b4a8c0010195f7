//! The shipped templates (templates/haproxy.cfg.j2, nginx.conf.j2, haproxy-tcp.cfg.j2), table
//! tested: a catalog view + a template → the config, checked for what each case is about, and
//! every rendered config validated by the real proxy (`haproxy -c`, `nginx -t`: Debian's haproxy
//! and nginx, installed by scripts/install-test-deps.sh).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use shoal_router::render::render;
use shoal_router::view::{InstanceView, NodeView, View};

fn template(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn inst(service: &str, node: &str, id: &str, addr: &str, port: u16, status: &'static str) -> InstanceView {
    InstanceView {
        service: service.into(),
        id: id.into(),
        node: node.into(),
        address: addr.into(),
        port,
        tags: vec!["v1".into()],
        meta: BTreeMap::from([("version".to_string(), "1".to_string())]),
        status,
        labels: BTreeMap::new(),
        weight: 1,
    }
}

/// A service: its name, its instances, its labels.
type ServiceCase<'a> = (&'a str, Vec<InstanceView>, &'a [(&'a str, &'a str)]);

fn view(services: Vec<ServiceCase>) -> View {
    let mut v = View { domain: "shoal".into(), index: 42, ..View::default() };
    for (name, mut list, labels) in services {
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, x)| (k.to_string(), x.to_string())).collect();
        for i in &mut list {
            i.labels = labels.clone();
        }
        v.instances.insert(name.to_string(), list);
        v.labels.insert(name.to_string(), labels);
    }
    v.nodes = vec![NodeView { name: "n1".into(), address: "127.0.0.1".into(), meta: BTreeMap::new() }];
    v
}

/// The settings the tests render with: listeners on loopback, files in `dir`.
fn env_for(dir: &std::path::Path) -> impl Fn(&str) -> Option<String> + Sync + use<> {
    let dir = dir.display().to_string();
    move |name: &str| match name {
        "SHOAL_ROUTER_BIND" => Some("127.0.44.1:18080".into()),
        "SHOAL_ROUTER_STATUS_BIND" => Some("127.0.44.1:18404".into()),
        "SHOAL_ROUTER_NGINX_DIR" => Some(dir.clone()),
        "SHOAL_ROUTER_TCP_ADDR" => Some("127.0.44.1".into()),
        _ => None,
    }
}

fn haproxy_check(text: &str, case: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("haproxy.cfg");
    std::fs::write(&f, text).unwrap();
    let o = Command::new("haproxy").args(["-c", "-q", "-f"]).arg(&f).output().expect("haproxy (Debian's haproxy)");
    assert!(
        o.status.success(),
        "{case}: haproxy -c refused the config: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn nginx_check(text: &str, dir: &std::path::Path, case: &str) {
    let f = dir.join("nginx.conf");
    std::fs::write(&f, text).unwrap();
    let o = Command::new("nginx")
        .arg("-t")
        .arg("-q")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-g")
        .arg(format!("pid {};", dir.join("nginx.pid").display()))
        .arg("-c")
        .arg(&f)
        .output()
        .expect("nginx (Debian's nginx)");
    assert!(
        o.status.success(),
        "{case}: nginx -t refused the config: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Case {
    name: &'static str,
    view: View,
    /// Lines (trimmed) the HAProxy config must hold, and must not.
    haproxy: &'static [&'static str],
    haproxy_not: &'static [&'static str],
    nginx: &'static [&'static str],
    nginx_not: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let web = |n: usize, status: &'static str| -> Vec<InstanceView> {
        (1..=n)
            .map(|k| inst("web", &format!("n{k}"), &format!("web.{k}"), &format!("10.0.0.{k}"), 8080, status))
            .collect()
    };
    vec![
        Case {
            name: "an empty catalog routes nothing and answers 404",
            view: view(vec![]),
            haproxy: &["default_backend no_route", "bind 127.0.44.1:18080"],
            haproxy_not: &["use_backend"],
            nginx: &["listen 127.0.44.1:18080 default_server;", "return 404 \"no Shoal service routes this host\\n\";"],
            nginx_not: &["upstream svc_"],
        },
        Case {
            name: "three passing instances, routed by NAME.domain",
            view: view(vec![("web", web(3, "passing"), &[])]),
            haproxy: &[
                "use_backend svc_web if { var(txn.host) -m str web.shoal }",
                "server n1_web_1 10.0.0.1:8080 check weight 1",
                "server n2_web_2 10.0.0.2:8080 check weight 1",
                "server n3_web_3 10.0.0.3:8080 check weight 1",
            ],
            haproxy_not: &["option httpchk"],
            nginx: &[
                "upstream svc_web {",
                "server 10.0.0.1:8080 weight=1 max_fails=1 fail_timeout=2s;",
                "server 10.0.0.3:8080 weight=1 max_fails=1 fail_timeout=2s;",
                "server_name web.shoal;",
                "proxy_pass http://svc_web;",
            ],
            nginx_not: &[],
        },
        Case {
            name: "critical, warning and maintenance instances are left out",
            view: view(vec![(
                "web",
                vec![
                    inst("web", "n1", "a", "10.0.0.1", 8080, "passing"),
                    inst("web", "n2", "b", "10.0.0.2", 8080, "critical"),
                    inst("web", "n3", "c", "10.0.0.3", 8080, "warning"),
                    inst("web", "n4", "d", "10.0.0.4", 8080, "maintenance"),
                ],
                &[],
            )]),
            haproxy: &["server n1_a 10.0.0.1:8080 check weight 1"],
            haproxy_not: &["10.0.0.2", "10.0.0.3", "10.0.0.4"],
            nginx: &["server 10.0.0.1:8080 weight=1 max_fails=1 fail_timeout=2s;"],
            nginx_not: &["10.0.0.2", "10.0.0.3", "10.0.0.4"],
        },
        Case {
            name: "labels set the hosts, the path prefix and the health check",
            view: view(vec![(
                "api",
                vec![inst("api", "n1", "api.1", "10.0.1.1", 9000, "passing")],
                &[
                    ("shoal.http.host", "api.example.com, API.example.org"),
                    ("shoal.http.path", "/v2"),
                    ("shoal.http.check", "/healthz"),
                ],
            )]),
            haproxy: &[
                "use_backend svc_api if { var(txn.host) -m str api.example.com } { path_beg /v2 }",
                "use_backend svc_api if { var(txn.host) -m str api.example.org } { path_beg /v2 }",
                "option httpchk GET /healthz",
            ],
            haproxy_not: &["api.shoal"],
            nginx: &["server_name api.example.com;", "server_name api.example.org;", "location /v2 {"],
            nginx_not: &["api.shoal"],
        },
        Case {
            name: "a service with no passing instance answers 503",
            view: view(vec![("db", vec![inst("db", "n1", "db.1", "10.0.2.1", 5432, "critical")], &[])]),
            haproxy: &["backend svc_db", "# No passing instance: HAProxy answers 503."],
            haproxy_not: &["10.0.2.1"],
            nginx: &["return 503 \"no passing instance of db\\n\";"],
            nginx_not: &["upstream svc_db", "10.0.2.1"],
        },
        Case {
            name: "two services on one host: the longer path first",
            view: view(vec![
                (
                    "site",
                    vec![inst("site", "n1", "s1", "10.0.3.1", 80, "passing")],
                    &[("shoal.http.host", "example.com")],
                ),
                (
                    "api",
                    vec![inst("api", "n1", "a1", "10.0.3.2", 80, "passing")],
                    &[("shoal.http.host", "example.com"), ("shoal.http.path", "/api")],
                ),
            ]),
            haproxy: &[
                "use_backend svc_api if { var(txn.host) -m str example.com } { path_beg /api }",
                "use_backend svc_site if { var(txn.host) -m str example.com }",
            ],
            haproxy_not: &[],
            nginx: &["location /api {", "location / {"],
            nginx_not: &[],
        },
        Case {
            name: "IPv6 instances, odd names, shoal.http=false and the consul service",
            view: view(vec![
                ("my.svc", vec![inst("my.svc", "n1", "x:1/y", "fd00::5", 8080, "passing")], &[]),
                ("hidden", vec![inst("hidden", "n1", "h", "10.0.4.1", 80, "passing")], &[("shoal.http", "false")]),
                ("consul", vec![inst("consul", "n1", "consul", "127.0.0.1", 8300, "passing")], &[]),
            ]),
            haproxy: &["backend svc_my_svc", "server n1_x_1_y [fd00::5]:8080 check weight 1", "-m str my.svc.shoal"],
            haproxy_not: &["hidden", "svc_consul"],
            nginx: &["server [fd00::5]:8080 weight=1 max_fails=1 fail_timeout=2s;", "upstream svc_my_svc {"],
            nginx_not: &["hidden", "svc_consul"],
        },
    ]
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

#[test]
fn shipped_templates_render_what_each_case_needs_and_the_proxies_accept_it() {
    let (hap, ngx) = (template("haproxy.cfg.j2"), template("nginx.conf.j2"));
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_for(dir.path());
        let h = render("haproxy.cfg.j2", &hap, &case.view, &env).unwrap_or_else(|e| panic!("{}: {e}", case.name)).text;
        let n = render("nginx.conf.j2", &ngx, &case.view, &env).unwrap_or_else(|e| panic!("{}: {e}", case.name)).text;
        let (hl, nl) = (lines(&h), lines(&n));
        for want in case.haproxy {
            assert!(hl.contains(want) || h.contains(want), "{}: haproxy config lacks {want:?}:\n{h}", case.name);
        }
        for not in case.haproxy_not {
            assert!(!h.contains(not), "{}: haproxy config has {not:?}:\n{h}", case.name);
        }
        for want in case.nginx {
            assert!(nl.contains(want), "{}: nginx config lacks {want:?}:\n{n}", case.name);
        }
        for not in case.nginx_not {
            assert!(!n.contains(not), "{}: nginx config has {not:?}:\n{n}", case.name);
        }
        assert!(!h.contains("\n\n\n") && !n.contains("\n\n\n"), "{}: runs of blank lines", case.name);
        haproxy_check(&h, case.name);
        nginx_check(&n, dir.path(), case.name);
    }
}

#[test]
fn the_tcp_template_listens_per_labelled_service() {
    let t = template("haproxy-tcp.cfg.j2");
    let v = view(vec![
        ("pg", vec![inst("pg", "n1", "pg.1", "10.0.5.1", 5432, "passing")], &[("shoal.tcp.port", "15432")]),
        ("web", vec![inst("web", "n1", "w", "10.0.5.2", 80, "passing")], &[]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let text = render("haproxy-tcp.cfg.j2", &t, &v, &env_for(dir.path())).unwrap().text;
    let l = lines(&text);
    for want in ["listen tcp_pg", "bind 127.0.44.1:15432", "server n1_pg_1 10.0.5.1:5432 check"] {
        assert!(l.contains(&want), "lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("10.0.5.2"), "web has no shoal.tcp.port:\n{text}");
    haproxy_check(&text, "tcp");
}
