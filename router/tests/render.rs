//! What a template sees and how a broken one fails: named cases of (view, template) → text or
//! error.

use std::collections::BTreeMap;

use shoal_router::render::{Deps, render};
use shoal_router::view::{InstanceView, View};

fn inst(service: &str, id: &str, addr: &str, status: &'static str, tags: &[&str], version: &str) -> InstanceView {
    InstanceView {
        service: service.into(),
        id: id.into(),
        node: "n1".into(),
        address: addr.into(),
        port: 80,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: BTreeMap::from([("version".to_string(), version.to_string())]),
        status,
        labels: BTreeMap::from([("team".to_string(), "edge".to_string())]),
        weight: 1,
    }
}

fn view() -> View {
    let mut v = View { domain: "shoal".into(), index: 7, ..View::default() };
    v.instances.insert(
        "web".into(),
        vec![
            inst("web", "a", "10.0.0.1", "passing", &["v1", "blue"], "1"),
            inst("web", "b", "10.0.0.2", "passing", &["v2"], "2"),
            inst("web", "c", "10.0.0.3", "critical", &["v1"], "1"),
        ],
    );
    v.labels.insert("web".into(), BTreeMap::from([("team".to_string(), "edge".to_string())]));
    v.kv.insert("cfg/maxconn".into(), Some("2048".into()));
    v.kv.insert("cfg/missing".into(), None);
    v.kv_trees.insert("cfg/hosts".into(), vec![("cfg/hosts/a".into(), "1".into()), ("cfg/hosts/b".into(), "2".into())]);
    v
}

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "yes".to_string())
}

#[test]
fn templates_see_the_catalog_kv_and_environment() {
    let cases: &[(&str, &str, &str)] = &[
        ("passing instances only", "{% for i in services.web %}{{ i.address }} {% endfor %}", "10.0.0.1 10.0.0.2 "),
        ("every service name", "{{ services | list | join(',') }}", "web"),
        ("service() with a tag", "{% for i in service('web', 'v1') %}{{ i.id }}{% endfor %}", "a"),
        ("service() tag as keyword", "{% for i in service('web', tag='V2') %}{{ i.id }}{% endfor %}", "b"),
        ("service() with critical ones", "{{ service('web', passing=false) | length }}", "3"),
        ("an unknown service is empty", "{{ service('nope') | length }}", "0"),
        (
            "an instance's fields",
            "{% set i = services.web[0] %}{{ i.service }} {{ i.node }} {{ i.port }} {{ i.status }} {{ i.meta.version }} {{ i.labels.team }}",
            "web n1 80 passing 1 edge",
        ),
        ("labels()", "{{ labels('web').team }}", "edge"),
        ("labels() of an unknown service", "{{ labels('nope') | length }}", "0"),
        ("kv()", "{{ kv('cfg/maxconn') }}", "2048"),
        ("kv() with a leading slash", "{{ kv('/cfg/maxconn') }}", "2048"),
        ("kv() of a missing key is none", "{{ kv('cfg/missing') is none }}", "True"),
        (
            "kv_tree()",
            "{% for e in kv_tree('cfg/hosts') %}{{ e.key }}={{ e.value }}@{{ e.path }} {% endfor %}",
            "a=1@cfg/hosts/a b=2@cfg/hosts/b ",
        ),
        ("env() set", "{{ env('SET') }}", "yes"),
        ("env() unset, with a default", "{{ env('UNSET') | default('d') }}", "d"),
        ("sanitize", "{{ 'my.svc/v1:x' | sanitize }}", "my_svc_v1_x"),
        (
            "by_tag",
            "{% for t, l in services.web | by_tag | items %}{{ t }}:{{ l | length }} {% endfor %}",
            "blue:1 v1:1 v2:1 ",
        ),
        (
            "by_meta",
            "{% for v, l in service('web', passing=false) | by_meta('version') | items %}{{ v }}:{{ l | map(attribute='id') | join }} {% endfor %}",
            "1:ac 2:b ",
        ),
        (
            "sort by attribute",
            "{{ services.web | sort(attribute='address', reverse=true) | map(attribute='id') | join }}",
            "ba",
        ),
        ("domain and index", "{{ domain }} {{ index }}", "shoal 7"),
        ("nodes", "{{ nodes | length }}", "0"),
        ("block tags leave no blank lines", "a\n{% if true %}\nb\n{% endif %}\nc\n", "a\nb\nc\n"),
        ("the trailing newline is kept", "x\n", "x\n"),
        ("no HTML escaping", "{{ '<a & b>' }}", "<a & b>"),
    ];
    for (name, src, want) in cases {
        let got = render("t.j2", src, &view(), &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.text, *want, "{name}");
    }
}

#[test]
fn kv_reads_are_reported_as_dependencies() {
    let r =
        render("t.j2", "{{ kv('a/b') }}{{ kv('cfg/maxconn') }}{% for e in kv_tree('p/') %}{% endfor %}", &view(), &env)
            .unwrap();
    let want =
        Deps { keys: ["a/b".to_string(), "cfg/maxconn".to_string()].into(), prefixes: ["p/".to_string()].into() };
    assert_eq!(r.deps, want);
    assert!(!r.deps.satisfied_by(&view()), "a/b and p/ were never read");
    let mut v = view();
    v.kv.insert("a/b".into(), None);
    v.kv_trees.insert("p/".into(), vec![]);
    assert!(r.deps.satisfied_by(&v));
}

#[test]
fn broken_templates_fail_with_the_name_line_and_reason() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("syntax error", "a\nb\n{% for x in %}\n", &["t.j2", "line 3", "syntax error"]),
        ("unclosed block", "{% if true %}\nx\n", &["t.j2", "syntax error"]),
        ("undefined variable", "ok\n{{ servics.web }}\n", &["t.j2", "line 2", "undefined"]),
        ("unknown filter", "{{ 'x' | nosuchfilter }}", &["t.j2", "unknown filter"]),
        ("wrong argument", "{{ service('web', passing='x') }}", &["t.j2", "line 1"]),
        ("unknown keyword", "{{ service('web', colour='red') }}", &["t.j2", "colour"]),
        ("by_meta without a key", "{{ services.web | by_meta('') }}", &["by_meta needs a meta key"]),
    ];
    for (name, src, wants) in cases {
        let e = render("t.j2", src, &view(), &env).expect_err(name).to_string();
        for w in *wants {
            assert!(e.to_lowercase().contains(&w.to_lowercase()), "{name}: {w:?} not in {e:?}");
        }
    }
}
