//! Table tests of the conventions: Registrator's examples (discovery.md §1.5) and Shoal's task rules.

use super::*;
use shoal_model::catalog::{CheckKind, CheckSpec, Health};

fn node() -> NodeFacts {
    NodeFacts { id: "00000000000000aa".into(), name: "h1".into(), address: "10.0.0.5".into(), register_others: true }
}

/// A running container on the default bridge (172.17.0.4), no ports.
fn container(name: &str) -> ContainerFacts {
    ContainerFacts {
        id: format!("{name}-id"),
        name: name.into(),
        image: "img:1".into(),
        networks: [("bridge".to_string(), "172.17.0.4".to_string())].into(),
        running: true,
        ..Default::default()
    }
}

/// Builders for the cases.
trait Facts {
    fn publish(self, port: &str, host_ip: &str, host_port: u16) -> Self;
    fn expose(self, port: &str) -> Self;
    fn env(self, kv: &str) -> Self;
    fn label(self, k: &str, v: &str) -> Self;
    fn networks(self, nets: &[(&str, &str)]) -> Self;
    fn task(self, node_id: &str, service: &str, task_id: &str) -> Self;
    fn with(self, f: impl FnOnce(&mut ContainerFacts)) -> Self;
}

impl Facts for ContainerFacts {
    fn publish(mut self, port: &str, host_ip: &str, host_port: u16) -> Self {
        let p = PortKey::parse(port).unwrap();
        self.exposed.insert(p);
        self.published.entry(p).or_default().push(HostBinding { ip: host_ip.into(), port: host_port });
        self
    }
    fn expose(mut self, port: &str) -> Self {
        self.exposed.insert(PortKey::parse(port).unwrap());
        self
    }
    fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.into());
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn networks(mut self, nets: &[(&str, &str)]) -> Self {
        self.networks = nets.iter().map(|(n, ip)| (n.to_string(), ip.to_string())).collect();
        self
    }
    fn task(self, node_id: &str, service: &str, task_id: &str) -> Self {
        self.label(labels::NODE_ID, node_id).label(labels::SERVICE_NAME, service).label(labels::TASK_ID, task_id)
    }
    fn with(mut self, f: impl FnOnce(&mut ContainerFacts)) -> Self {
        f(&mut self);
        self
    }
}

/// `source id name address:port [tags]`, one per instance.
fn summary(d: &Derivation) -> Vec<String> {
    d.instances
        .iter()
        .map(|(s, i)| format!("{} {} {} {}:{} [{}]", s.as_str(), i.id, i.name, i.address, i.port, i.tags.join(",")))
        .collect()
}

#[test]
fn names_ids_addresses_and_ports() {
    let cases: Vec<(&str, ContainerFacts, NodeFacts, Vec<&str>)> = vec![
        // Registrator's examples (§1.5) with a name given, since Shoal registers only named containers.
        (
            "redis: published port on all addresses → node address and host port",
            container("redis.0").publish("6379/tcp", "0.0.0.0", 10000).env("SERVICE_NAME=redis"),
            node(),
            vec!["registrator h1:redis.0:6379 redis 10.0.0.5:10000 []"],
        ),
        (
            "nginx: two published ports → -<port> names",
            container("nginx.0").publish("443/tcp", "", 4443).publish("80/tcp", "", 8000).env("SERVICE_NAME=nginx"),
            node(),
            vec![
                "registrator h1:nginx.0:80 nginx-80 10.0.0.5:8000 []",
                "registrator h1:nginx.0:443 nginx-443 10.0.0.5:4443 []",
            ],
        ),
        (
            "nginx + SERVICE_80_NAME + SERVICE_TAGS: the port-scoped name has no suffix",
            container("nginx.0")
                .publish("443/tcp", "", 4443)
                .publish("80/tcp", "", 8000)
                .env("SERVICE_NAME=nginx")
                .env("SERVICE_80_NAME=http")
                .env("SERVICE_TAGS=www"),
            node(),
            vec![
                "registrator h1:nginx.0:80 http 10.0.0.5:8000 [www]",
                "registrator h1:nginx.0:443 nginx-443 10.0.0.5:4443 [www]",
            ],
        ),
        (
            "dns over udp: :udp on the ID and a udp tag",
            container("dns").publish("53/udp", "0.0.0.0", 53).label("SERVICE_NAME", "coredns"),
            node(),
            vec!["registrator h1:dns:53:udp coredns 10.0.0.5:53 [udp]"],
        ),
        (
            "shoal.service without a published port: container IP and exposed port (Registrator's -internal)",
            container("dns").expose("53/udp").label(keys::SERVICE, "coredns"),
            node(),
            vec!["registrator h1:dns:53:udp coredns 172.17.0.4:53 [udp]"],
        ),
        (
            "shoal.service without any port: port 0 on the container IP",
            container("legacy").label(keys::SERVICE, "legacy"),
            node(),
            vec!["registrator h1:legacy legacy 172.17.0.4:0 []"],
        ),
        (
            "two exposed, one published: one service, no suffix",
            container("web").expose("9090/tcp").publish("80/tcp", "", 8000).env("SERVICE_NAME=web"),
            node(),
            vec!["registrator h1:web:80 web 10.0.0.5:8000 []"],
        ),
        (
            "only a port-scoped name: the other port is left out, the name keeps no suffix",
            container("nginx.0").publish("443/tcp", "", 4443).publish("80/tcp", "", 8000).env("SERVICE_80_NAME=http"),
            node(),
            vec!["registrator h1:nginx.0:80 http 10.0.0.5:8000 []"],
        ),
        (
            "SERVICE_443_IGNORE: that port goes, the group suffix stays (decided before)",
            container("nginx.0")
                .publish("443/tcp", "", 4443)
                .publish("80/tcp", "", 8000)
                .env("SERVICE_NAME=nginx")
                .env("SERVICE_443_IGNORE=1"),
            node(),
            vec!["registrator h1:nginx.0:80 nginx-80 10.0.0.5:8000 []"],
        ),
        (
            "a label beats an env var; shoal.service beats SERVICE_NAME; port-scoped beats both",
            container("a")
                .publish("80/tcp", "", 8000)
                .publish("81/tcp", "", 8001)
                .env("SERVICE_NAME=env")
                .label("SERVICE_NAME", "label")
                .label(keys::SERVICE, "shoal")
                .label("SERVICE_81_NAME", "scoped"),
            node(),
            vec!["registrator h1:a:80 shoal-80 10.0.0.5:8000 []", "registrator h1:a:81 scoped 10.0.0.5:8001 []"],
        ),
        (
            "env SERVICE_NAME is enough",
            container("a").publish("80/tcp", "", 8000).env("SERVICE_NAME=env"),
            node(),
            vec!["registrator h1:a:80 env 10.0.0.5:8000 []"],
        ),
        (
            "a specific HostIP is registered as is",
            container("a").publish("80/tcp", "127.0.0.3", 8000).label(keys::SERVICE, "a"),
            node(),
            vec!["registrator h1:a:80 a 127.0.0.3:8000 []"],
        ),
        (
            "the host network publishes every exposed port on the node",
            container("a").networks(&[("host", "")]).expose("8080/tcp").label(keys::SERVICE, "a"),
            node(),
            vec!["registrator h1:a:8080 a 10.0.0.5:8080 []"],
        ),
        (
            "tags: SERVICE_TAGS (escaped comma, empty items dropped, not trimmed) then shoal.tags",
            container("a")
                .publish("80/tcp", "", 8000)
                .label(keys::SERVICE, "a")
                .env(r"SERVICE_TAGS=x,y\,z,, w")
                .label(keys::TAGS, "v,x"),
            node(),
            vec!["registrator h1:a:80 a 10.0.0.5:8000 [x,y,z, w,v]"],
        ),
        (
            "shoal.port picks one of several ports (no suffix)",
            container("a")
                .publish("80/tcp", "", 8000)
                .publish("81/tcp", "", 8001)
                .label(keys::SERVICE, "a")
                .label(keys::PORT, "81"),
            node(),
            vec!["registrator h1:a:81 a 10.0.0.5:8001 []"],
        ),
        (
            "a shoal.port that is not one of the ports is ignored",
            container("a")
                .publish("80/tcp", "", 8000)
                .publish("81/tcp", "", 8001)
                .label(keys::SERVICE, "a")
                .label(keys::PORT, "82"),
            node(),
            vec!["registrator h1:a:80 a-80 10.0.0.5:8000 []", "registrator h1:a:81 a-81 10.0.0.5:8001 []"],
        ),
        // Shoal's tasks.
        (
            "task with a host-mode port on the node's publish address",
            container("web.1.t1").task("00000000000000aa", "web", "t1").publish("8080/tcp", "127.0.0.2", 18080),
            node(),
            vec!["task web.1.t1 web 127.0.0.2:18080 []"],
        ),
        (
            "task with a host-mode port on every address: the node's address",
            container("web.1.t1").task("00000000000000aa", "web", "t1").publish("8080/tcp", "0.0.0.0", 18080),
            node(),
            vec!["task web.1.t1 web 10.0.0.5:18080 []"],
        ),
        (
            "task without published ports: its IP on its first network (by name) and the container port",
            container("web.1.t1")
                .task("00000000000000aa", "web", "t1")
                .networks(&[("shoal-web-s1-000000aa", "172.18.0.3"), ("bridge", "")])
                .expose("8080/tcp"),
            node(),
            vec!["task web.1.t1 web 172.18.0.3:8080 []"],
        ),
        (
            "task with several ports: one instance per port, <service>-<port> and <container>:<port>",
            container("web.1.t1").task("00000000000000aa", "web", "t1").expose("8080/tcp").expose("9090/tcp"),
            node(),
            vec!["task web.1.t1:8080 web-8080 172.17.0.4:8080 []", "task web.1.t1:9090 web-9090 172.17.0.4:9090 []"],
        ),
        (
            "task with several ports and shoal.port: one instance",
            container("web.1.t1")
                .task("00000000000000aa", "web", "t1")
                .expose("8080/tcp")
                .expose("9090/tcp")
                .label(keys::PORT, "9090/tcp"),
            node(),
            vec!["task web.1.t1 web 172.17.0.4:9090 []"],
        ),
        (
            "task publishing one of two ports: only the published one",
            container("web.1.t1").task("00000000000000aa", "web", "t1").expose("9090/tcp").publish(
                "8080/tcp",
                "127.0.0.2",
                18080,
            ),
            node(),
            vec!["task web.1.t1 web 127.0.0.2:18080 []"],
        ),
        (
            "task without a port: port 0 on its address",
            container("web.1.t1").task("00000000000000aa", "web", "t1"),
            node(),
            vec!["task web.1.t1 web 172.17.0.4:0 []"],
        ),
        (
            "tasks are registered with register_others off",
            container("web.1.t1").task("00000000000000aa", "web", "t1"),
            NodeFacts { register_others: false, ..node() },
            vec!["task web.1.t1 web 172.17.0.4:0 []"],
        ),
    ];
    for (name, c, n, want) in cases {
        let d = derive(&c, &n);
        assert_eq!(summary(&d), want, "{name}: {d:?}");
        assert!(d.ignored.is_none(), "{name}: {:?}", d.ignored);
        for (source, i) in &d.instances {
            assert_eq!(i.container_id.as_deref(), Some(c.id.as_str()), "{name}");
            let task = c.labels.get(labels::TASK_ID).cloned();
            assert_eq!(i.task_id, task, "{name}");
            assert_eq!(*source == Source::Task, task.is_some(), "{name}");
        }
    }
}

#[test]
fn ignored_containers_say_why() {
    let cases: Vec<(&str, ContainerFacts, NodeFacts, &str)> = vec![
        ("not running", container("a").label(keys::SERVICE, "a").with(|c| c.running = false), node(), "not running"),
        (
            "another node's task (nodes sharing one engine)",
            container("web.1.t1").task("00000000000000bb", "web", "t1"),
            node(),
            "another node",
        ),
        (
            "a task without its service label",
            container("x").label(labels::TASK_ID, "t1").label(labels::NODE_ID, "00000000000000aa"),
            node(),
            "shoal.service.name",
        ),
        (
            "SERVICE_IGNORE=false ignores too",
            container("a").label(keys::SERVICE, "a").env("SERVICE_IGNORE=false"),
            node(),
            "SERVICE_IGNORE",
        ),
        (
            "an empty SERVICE_IGNORE does not",
            container("a").label(keys::SERVICE, "a").env("SERVICE_IGNORE="),
            node(),
            "",
        ),
        ("no name", container("a").publish("80/tcp", "", 8000), node(), "names no service"),
        (
            "a name but nothing published",
            container("a").expose("80/tcp").env("SERVICE_NAME=a"),
            node(),
            "no published ports",
        ),
        (
            "others off",
            container("a").publish("80/tcp", "", 8000).label(keys::SERVICE, "a"),
            NodeFacts { register_others: false, ..node() },
            "registering other containers is off",
        ),
        (
            "every port ignored",
            container("a").publish("80/tcp", "", 8000).label(keys::SERVICE, "a").env("SERVICE_80_IGNORE=y"),
            node(),
            "SERVICE_80_IGNORE",
        ),
    ];
    for (name, c, n, why) in cases {
        let d = derive(&c, &n);
        if why.is_empty() {
            assert!(d.ignored.is_none() && !d.instances.is_empty(), "{name}: {d:?}");
            continue;
        }
        assert!(d.instances.is_empty(), "{name}: {d:?}");
        let got = d.ignored.unwrap_or_default();
        assert!(got.contains(why), "{name}: {got:?}");
        assert!(instances(&c, &n).is_empty(), "{name}");
    }
}

#[test]
fn meta_keeps_what_consul_accepts_and_reports_the_rest() {
    let c = container("a")
        .publish("80/tcp", "", 8000)
        .label(keys::SERVICE, "a")
        .env("SERVICE_REGION=us2")
        .env("SERVICE_Zone=z1")
        .env("SERVICE_A.B=1")
        .env("SERVICE_consul-x=1")
        .env("SERVICE_CHECK_TCP=true")
        .env("SERVICE_80_REGION=eu")
        .env("SERVICE_ID=custom")
        .env(&format!("SERVICE_LONG={}", "v".repeat(513)))
        .env("SERVICE_EMPTY=")
        .env("SERVICE_TAGS=t");
    let d = derive(&c, &node());
    let meta = &d.instances[0].1.meta;
    let want: BTreeMap<String, String> = [("check_tcp", "true"), ("region", "eu"), ("zone", "z1")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert_eq!(meta, &want, "lower-cased keys, port-scoped wins, id/tags/name and empty values are not meta");
    for bad in ["\"a.b\"", "\"consul-x\"", "\"long\""] {
        assert!(d.skipped.iter().any(|s| s.contains(bad)), "{bad} reported: {:?}", d.skipped);
    }
    assert_eq!(d.instances[0].1.id, "h1:a:80", "SERVICE_ID does not replace Shoal's IDs");
}

fn http(url: &str, method: &str) -> CheckKind {
    CheckKind::Http { url: url.into(), method: method.into(), headers: BTreeMap::new(), tls_skip_verify: false }
}

fn exec(args: &[&str]) -> CheckKind {
    CheckKind::Exec { args: args.iter().map(|s| s.to_string()).collect(), container: "a-id".into() }
}

#[test]
fn service_checks_from_env_and_labels() {
    // (name, extra env/labels, want: (kind, interval, timeout, status, deregister_after) or None)
    type Want = Option<(CheckKind, u64, u64, Health, Option<u64>)>;
    let base = || container("a").publish("80/tcp", "", 8000).label(keys::SERVICE, "web");
    let cases: Vec<(&str, ContainerFacts, Want)> = vec![
        ("no check keys: no check", base(), None),
        (
            "http: path on the registered address, GET, 10 s",
            base().env("SERVICE_CHECK_HTTP=/health"),
            Some((http("http://10.0.0.5:8000/health", "GET"), 10_000, 10_000, Health::Critical, None)),
        ),
        (
            "http with method, interval, timeout, initial status, deregister after",
            base()
                .env("SERVICE_CHECK_HTTP=/h")
                .env("SERVICE_CHECK_HTTP_METHOD=HEAD")
                .env("SERVICE_CHECK_INTERVAL=5s")
                .env("SERVICE_CHECK_TIMEOUT=2s")
                .env("SERVICE_CHECK_INITIAL_STATUS=passing")
                .env("SERVICE_CHECK_DEREGISTER_AFTER=10m"),
            Some((http("http://10.0.0.5:8000/h", "HEAD"), 5_000, 2_000, Health::Passing, Some(600_000))),
        ),
        (
            "https",
            base().label("SERVICE_CHECK_HTTPS", "/s"),
            Some((http("https://10.0.0.5:8000/s", "GET"), 10_000, 10_000, Health::Critical, None)),
        ),
        (
            "tcp: any non-empty value",
            base().env("SERVICE_CHECK_TCP=yes"),
            Some((CheckKind::Tcp { addr: "10.0.0.5:8000".into() }, 10_000, 10_000, Health::Critical, None)),
        ),
        (
            "script: split on whitespace (no shell in scratch images), $SERVICE_IP/$SERVICE_PORT replaced",
            base().env("SERVICE_CHECK_SCRIPT=/shoal probe http://$SERVICE_IP:$SERVICE_PORT/health"),
            Some((exec(&["/shoal", "probe", "http://10.0.0.5:8000/health"]), 10_000, 30_000, Health::Critical, None)),
        ),
        (
            "cmd beats script",
            base().env("SERVICE_CHECK_SCRIPT=/a").env("SERVICE_CHECK_CMD=/b x"),
            Some((exec(&["/b", "x"]), 10_000, 30_000, Health::Critical, None)),
        ),
        (
            "ttl: no interval",
            base().env("SERVICE_CHECK_TTL=30s"),
            Some((CheckKind::Ttl { ttl_ms: 30_000 }, 0, 0, Health::Critical, None)),
        ),
        (
            "http beats tcp and ttl",
            base().env("SERVICE_CHECK_TCP=1").env("SERVICE_CHECK_TTL=30s").env("SERVICE_CHECK_HTTP=/"),
            Some((http("http://10.0.0.5:8000/", "GET"), 10_000, 10_000, Health::Critical, None)),
        ),
        (
            "Shoal's labels: shoal.check.http, shoal.check.interval, shoal.check.timeout",
            base()
                .label("shoal.check.http", "/health")
                .label("shoal.check.interval", "1s")
                .label("shoal.check.timeout", "500ms"),
            Some((http("http://10.0.0.5:8000/health", "GET"), 1_000, 500, Health::Critical, None)),
        ),
        (
            "shoal.check.tcp",
            base().label("shoal.check.tcp", "true"),
            Some((CheckKind::Tcp { addr: "10.0.0.5:8000".into() }, 10_000, 10_000, Health::Critical, None)),
        ),
        (
            "a bad interval falls back to 10 s",
            base().env("SERVICE_CHECK_TCP=1").env("SERVICE_CHECK_INTERVAL=1m30s"),
            Some((CheckKind::Tcp { addr: "10.0.0.5:8000".into() }, 10_000, 10_000, Health::Critical, None)),
        ),
        (
            "a port-scoped check applies to its port",
            base().env("SERVICE_80_CHECK_HTTP=/p"),
            Some((http("http://10.0.0.5:8000/p", "GET"), 10_000, 10_000, Health::Critical, None)),
        ),
        ("another port's check does not", base().env("SERVICE_81_CHECK_HTTP=/p"), None),
        ("a bad ttl: no check", base().env("SERVICE_CHECK_TTL=forever"), None),
        (
            "a task's check on its container address",
            container("web.1.t1")
                .task("00000000000000aa", "web", "t1")
                .expose("8080/tcp")
                .label("shoal.check.http", "/health"),
            Some((http("http://172.17.0.4:8080/health", "GET"), 10_000, 10_000, Health::Critical, None)),
        ),
    ];
    for (name, c, want) in cases {
        let d = derive(&c, &node());
        assert_eq!(d.instances.len(), 1, "{name}: {d:?}");
        let i = &d.instances[0].1;
        let got: Vec<&CheckSpec> =
            i.checks.iter().filter(|c| !matches!(c.def.kind, CheckKind::Docker { .. })).collect();
        match want {
            None => assert!(got.is_empty(), "{name}: {got:?}"),
            Some((kind, interval, timeout, status, dereg)) => {
                let want_kind = match kind {
                    CheckKind::Exec { args, .. } => CheckKind::Exec { args, container: c.id.clone() },
                    k => k,
                };
                assert_eq!(got.len(), 1, "{name}: one check per instance");
                let ch = got[0];
                assert_eq!(ch.id, format!("service:{}", i.id), "{name}");
                assert_eq!(ch.name, "Service 'web' check", "{name}");
                assert_eq!(ch.def.kind, want_kind, "{name}");
                assert_eq!((ch.def.interval_ms, ch.def.timeout_ms), (interval, timeout), "{name}");
                assert_eq!((ch.status, ch.def.deregister_after_ms), (status, dereg), "{name}");
            }
        }
    }
}

#[test]
fn docker_health_becomes_a_check() {
    type Case = (&'static str, bool, Option<DockerHealth>, Option<(Health, &'static str)>);
    let cases: Vec<Case> = vec![
        ("no health check", false, None, None),
        ("health check, no status yet: starting", true, None, Some((Health::Critical, "starting"))),
        ("starting", true, Some(DockerHealth::Starting), Some((Health::Critical, "starting"))),
        ("healthy", true, Some(DockerHealth::Healthy), Some((Health::Passing, "healthy"))),
        ("unhealthy", true, Some(DockerHealth::Unhealthy), Some((Health::Critical, "unhealthy"))),
    ];
    for (name, has, health, want) in cases {
        let c = container("web.1.t1").task("00000000000000aa", "web", "t1").with(|c| {
            c.has_healthcheck = has;
            c.health = health;
        });
        let d = derive(&c, &node());
        let i = &d.instances[0].1;
        let got = i.checks.iter().find(|c| matches!(c.def.kind, CheckKind::Docker { .. }));
        match want {
            None => assert!(got.is_none(), "{name}"),
            Some((status, output)) => {
                let got = got.unwrap_or_else(|| panic!("{name}: no docker check"));
                assert_eq!(got.id, "service:web.1.t1:docker", "{name}");
                assert_eq!(got.def.kind, CheckKind::Docker { container: c.id.clone() }, "{name}");
                assert_eq!((got.status, got.output.as_str()), (status, output), "{name}");
            }
        }
    }
}

#[test]
fn port_keys_parse() {
    let cases: &[(&str, Option<PortKey>)] = &[
        ("80", Some(PortKey::tcp(80))),
        ("80/tcp", Some(PortKey::tcp(80))),
        ("53/udp", Some(PortKey { port: 53, proto: Proto::Udp })),
        ("0/tcp", None),
        ("80/icmp", None),
        ("x", None),
    ];
    for (s, want) in cases {
        assert_eq!(PortKey::parse(s), *want, "{s}");
    }
    assert_eq!(PortKey { port: 53, proto: Proto::Udp }.to_string(), "53/udp");
}
