//! Consul's `?filter=` expressions: the language of hashicorp/go-bexpr v0.1.2, the version Consul
//! pins, with its typed validation and its error texts.
//!
//! ```text
//!  ?filter=<expr> ─▶ parse.rs  (the PEG grammar, over pigeon's matchers and errors in peg.rs)
//!                       │ Ast
//!                       ▼
//!                   eval.rs::compile  (selectors, operators, values checked against a schema.rs type)
//!                       │ Filter
//!  handler's JSON ──────▼
//!  elements ──────▶ eval.rs::eval  (one element at a time) ─▶ the elements that match
//! ```
//!
//! A handler builds the JSON it returns, then keeps the elements (or, for the agent endpoints,
//! the map values) that [`Filter::matches`]:
//!
//! ```ignore
//! let filter = filter::from_query(query.get("filter"), filter::CATALOG_SERVICE)?;
//! if let Some(f) = &filter {
//!     nodes.retain(|n| f.matches(n));
//! }
//! ```
//!
//! In short (see `discovery.md` §3 for the whole story): `or` of `and` of `not` of matches or
//! parenthesised expressions; lower-case keywords only; matches are `Sel == V`, `Sel != V`,
//! `Sel is [not] empty`, `V [not] in Sel`, `Sel [not] contains V`, `Sel [not] matches V` (an
//! unanchored regular expression); values are bare words, numbers, `"Go-escaped"` or `` `raw` ``
//! strings. Which operators a field allows depends on its type ([`Field`]). A selector through a
//! list of structs (`Checks.Status`) matches if any element does.

mod eval;
mod parse;
mod peg;
mod schema;
mod strconv;

pub use schema::{AGENT_SERVICE, CATALOG_NODE, CATALOG_SERVICE, Field, HEALTH_CHECK, HEALTH_SERVICE, Schema};

/// Longest filter accepted, in bytes. Consul has no bound; Shoal has one so that a hostile filter
/// cannot cost much to parse. Real filters are a few dozen bytes.
pub const MAX_FILTER_BYTES: usize = 4096;

/// A filter that could not be created. Its `Display` is Consul's whole message,
/// `Failed to create boolean expression evaluator: <reason>`.
///
/// Consul answers these with **500**: its HTTP layer turns only its own `BadRequestError` into a
/// 400, and a maintainer agreed in hashicorp/consul#7338 that this should be 400. Shoal answers
/// **400** (through `shoal_registry::Error::BadRequest`) with the same text; Consul's clients only
/// look at whether the status is 2xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not in the grammar: `line:col (offset): …`, worded as bexpr's pigeon parser words it.
    #[error("Failed to create boolean expression evaluator: {0}")]
    Syntax(String),
    /// In the grammar, but not right for the element type: an unknown selector, an operator the
    /// field's type does not allow, a value that does not convert, a bad regular expression.
    #[error("Failed to create boolean expression evaluator: {0}")]
    Invalid(String),
    /// Longer than [`MAX_FILTER_BYTES`] (Shoal's bound; Consul has none).
    #[error(
        "Failed to create boolean expression evaluator: the filter is {0} bytes long, more than the {MAX_FILTER_BYTES} allowed"
    )]
    TooLong(usize),
}

impl From<FilterError> for shoal_registry::Error {
    fn from(e: FilterError) -> Self {
        shoal_registry::Error::BadRequest(e.to_string())
    }
}

/// A parsed filter, checked against the element type it will be run on.
#[derive(Debug)]
pub struct Filter {
    expr: eval::Expr,
    schema: &'static Schema,
}

impl Filter {
    /// Parses and validates `expr` against `schema`; the error's `Display` is Consul's full message.
    ///
    /// An empty `expr` is a syntax error here; Consul treats an empty `?filter=` as no filter,
    /// which [`from_query`] does.
    pub fn new(expr: &str, schema: &'static Schema) -> Result<Filter, FilterError> {
        if expr.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLong(expr.len()));
        }
        let ast = parse::parse(expr).map_err(FilterError::Syntax)?;
        let expr = eval::compile(ast, schema).map_err(FilterError::Invalid)?;
        Ok(Filter { expr, schema })
    }

    /// Whether `element` (the JSON the endpoint returns for one element, keys as in the schema)
    /// matches. A missing or `null` key reads as its field's zero value (`""`, `0`, `false`, empty),
    /// as a Go struct field would; a missing *map* key has bexpr's own answers (`!=` true, `==` false, …).
    pub fn matches(&self, element: &serde_json::Value) -> bool {
        eval::eval(&self.expr, self.schema, element)
    }
}

/// Parses `?filter=` if present: `raw` is its decoded value (`Query::get("filter")`).
/// `Ok(None)` when it is absent or empty, as in Consul.
pub fn from_query(raw: Option<&str>, schema: &'static Schema) -> Result<Option<Filter>, FilterError> {
    match raw {
        None | Some("") => Ok(None),
        Some(expr) => Filter::new(expr, schema).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn catalog_service() -> Value {
        json!({
            "ID": "6f2c1ab0", "Node": "h1", "Address": "10.0.0.5", "Datacenter": "dc1",
            "TaggedAddresses": {"lan": "10.0.0.5"}, "NodeMeta": {"rack-id": "r1"},
            "ServiceKind": "", "ServiceID": "h1:web.1:8080", "ServiceName": "web",
            "ServiceTags": ["prod", "primary"], "ServiceAddress": "",
            "ServiceTaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.5", "Port": 32768}},
            "ServiceWeights": {"Passing": 1, "Warning": 1},
            "ServiceMeta": {"env": "prod", "build-id": "b-42", "empty": ""},
            "ServicePort": 8080, "ServiceEnableTagOverride": false
        })
    }

    fn check(id: &str, status: &str) -> Value {
        json!({"Node": "h1", "CheckID": id, "Name": id, "Status": status, "Notes": "", "Output": "",
               "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": ""})
    }

    fn health_service(statuses: &[&str]) -> Value {
        let checks: Vec<Value> = statuses.iter().enumerate().map(|(i, s)| check(&format!("c{i}"), s)).collect();
        json!({
            "Node": {"ID": "n1", "Node": "h1", "Address": "10.0.0.5", "Datacenter": "dc1",
                     "Meta": {"rack-id": "r2"}, "TaggedAddresses": {}},
            "Service": {"ID": "web.1", "Service": "web", "Kind": "", "Address": "", "Tags": ["v2"],
                        "Meta": {}, "Port": 8080, "EnableTagOverride": true,
                        "Weights": {"Passing": 1, "Warning": 1}, "TaggedAddresses": null},
            "Checks": checks
        })
    }

    /// No endpoint has a map of lists, the one type where `is empty` reaches a missing map key.
    const GROUPS: &Schema = &[("Groups", Field::Map(&Field::StrList))];

    #[test]
    fn matches() {
        let cat = catalog_service;
        let healthy = || health_service(&["passing", "passing"]);
        let mixed = || health_service(&["passing", "critical"]);
        let unchecked = || health_service(&[]);
        let cases: Vec<(&str, &'static Schema, &str, Value, bool)> = vec![
            // grammar
            (
                "precedence: not > and > or",
                CATALOG_SERVICE,
                "Node == x and not Node == h1 or ServicePort == 8080",
                cat(),
                true,
            ),
            ("and binds tighter than or", CATALOG_SERVICE, "Node == h1 or Node == x and Node == y", cat(), true),
            (
                "parentheses override precedence",
                CATALOG_SERVICE,
                "(Node == h1 or Node == x) and Node == y",
                cat(),
                false,
            ),
            ("not not", CATALOG_SERVICE, "not not Node == h1", cat(), true),
            ("bare word value", CATALOG_SERVICE, "Node == h1", cat(), true),
            ("raw string", CATALOG_SERVICE, r"ServiceID matches `^h1:web\.1:`", cat(), true),
            ("go escapes", CATALOG_SERVICE, r#"ServiceName == "\x77\u0065b""#, cat(), true),
            // strings
            ("string equal", CATALOG_SERVICE, "ServiceName == \"web\"", cat(), true),
            ("string equal is case-sensitive", CATALOG_SERVICE, "ServiceName == \"Web\"", cat(), false),
            ("empty string equal", CATALOG_SERVICE, "ServiceAddress == \"\"", cat(), true),
            ("in a string is a substring", CATALOG_SERVICE, "\"eb\" in ServiceName", cat(), true),
            ("contains a string", CATALOG_SERVICE, "Address contains \"0.0\"", cat(), true),
            ("not contains a string", CATALOG_SERVICE, "Address not contains \"0.0\"", cat(), false),
            ("matches is unanchored", CATALOG_SERVICE, "Node matches \"1\"", cat(), true),
            ("matches anchored", CATALOG_SERVICE, "Node matches \"^edge-\"", cat(), false),
            ("not matches", CATALOG_SERVICE, "Node not matches \"^edge-\"", cat(), true),
            (
                "missing string key is empty",
                CATALOG_SERVICE,
                "ServiceKind == \"\" and Datacenter != \"\"",
                json!({"Datacenter": "dc1"}),
                true,
            ),
            // lists of strings
            ("in a list is exact", CATALOG_SERVICE, "\"primary\" in ServiceTags", cat(), true),
            ("in a list is not a substring", CATALOG_SERVICE, "\"prim\" in ServiceTags", cat(), false),
            ("in a list is case-sensitive", CATALOG_SERVICE, "\"Primary\" in ServiceTags", cat(), false),
            ("not in a list", CATALOG_SERVICE, "canary not in ServiceTags", cat(), true),
            ("list is not empty", CATALOG_SERVICE, "ServiceTags is not empty", cat(), true),
            ("null list is empty", CATALOG_SERVICE, "ServiceTags is empty", json!({"ServiceTags": null}), true),
            // maps
            ("in a map is a key", CATALOG_SERVICE, "\"env\" in ServiceMeta", cat(), true),
            ("in a map is not a value", CATALOG_SERVICE, "prod in ServiceMeta", cat(), false),
            ("map value", CATALOG_SERVICE, "ServiceMeta.env == \"prod\"", cat(), true),
            ("map value by index", CATALOG_SERVICE, "ServiceMeta[\"build-id\"] == \"b-42\"", cat(), true),
            ("map value that is empty", CATALOG_SERVICE, "ServiceMeta.empty == \"\"", cat(), true),
            ("map of structs", CATALOG_SERVICE, "ServiceTaggedAddresses.lan_ipv4.Port == 32768", cat(), true),
            (
                "map is empty",
                HEALTH_SERVICE,
                "Service.Meta is empty and Service.TaggedAddresses is empty",
                healthy(),
                true,
            ),
            ("missing key ==", CATALOG_SERVICE, "ServiceMeta.absent == \"\"", cat(), false),
            ("missing key !=", CATALOG_SERVICE, "ServiceMeta.absent != \"x\"", cat(), true),
            ("missing key in", CATALOG_SERVICE, "x in ServiceMeta.absent", cat(), false),
            ("missing key not in", CATALOG_SERVICE, "x not in ServiceMeta.absent", cat(), true),
            ("missing key matches (true in v0.1.2)", CATALOG_SERVICE, "ServiceMeta.absent matches \"x\"", cat(), true),
            ("missing key not matches", CATALOG_SERVICE, "ServiceMeta.absent not matches \"x\"", cat(), true),
            ("missing key is empty", GROUPS, "Groups.absent is empty", json!({"Groups": {"a": ["x"]}}), true),
            ("missing key is not empty", GROUPS, "Groups.absent is not empty", json!({"Groups": {"a": ["x"]}}), false),
            ("present key is not empty", GROUPS, "Groups.a is not empty", json!({"Groups": {"a": ["x"]}}), true),
            ("missing key of a map of structs", CATALOG_SERVICE, "ServiceTaggedAddresses.wan.Port != 1", cat(), true),
            ("missing map", CATALOG_SERVICE, "NodeMeta.rack == r1", json!({}), false),
            // typed fields
            ("int equal", CATALOG_SERVICE, "ServicePort == 8080", cat(), true),
            ("int not equal", CATALOG_SERVICE, "ServicePort != 8080", cat(), false),
            ("int from a quoted hex", CATALOG_SERVICE, "ServicePort == \"0x1f90\"", cat(), true),
            ("int from a leading-zero octal", CATALOG_SERVICE, "ServiceWeights.Passing == \"01\"", cat(), true),
            ("missing int is zero", CATALOG_SERVICE, "ServicePort == 0", json!({}), true),
            ("bool true", HEALTH_SERVICE, "Service.EnableTagOverride == true", healthy(), true),
            ("bool 1", HEALTH_SERVICE, "Service.EnableTagOverride == 1", healthy(), true),
            ("bool t", HEALTH_SERVICE, "Service.EnableTagOverride == t", healthy(), true),
            ("bool False", CATALOG_SERVICE, "ServiceEnableTagOverride == False", cat(), true),
            // lists of structs: any element
            ("any check critical", HEALTH_SERVICE, "Checks.Status == critical", mixed(), true),
            ("no check critical", HEALTH_SERVICE, "Checks.Status == critical", healthy(), false),
            ("!= is per element: any not passing", HEALTH_SERVICE, "Checks.Status != passing", mixed(), true),
            (
                "!= per element is true despite a critical check",
                HEALTH_SERVICE,
                "Checks.Status != critical",
                mixed(),
                true,
            ),
            ("all passing when some are not", HEALTH_SERVICE, "not (Checks.Status != \"passing\")", mixed(), false),
            ("all passing", HEALTH_SERVICE, "not (Checks.Status != \"passing\")", healthy(), true),
            ("no checks: nothing matches", HEALTH_SERVICE, "Checks.Status != passing", unchecked(), false),
            ("no checks: all passing", HEALTH_SERVICE, "not (Checks.Status != passing)", unchecked(), true),
            ("checks is empty", HEALTH_SERVICE, "Checks is empty", unchecked(), true),
            ("list inside a list element", HEALTH_SERVICE, "x in Checks.ServiceTags", healthy(), false),
            // Consul's documented examples (discovery.md §3.6)
            (
                "example 4",
                HEALTH_SERVICE,
                "Service.Tags contains \"v2\" and Node.Meta[\"rack-id\"] != \"r1\"",
                healthy(),
                true,
            ),
            (
                "example 7",
                AGENT_SERVICE,
                "Service matches \"^api-\" and Meta is not empty and Port != 0",
                json!({"ID": "api-1", "Service": "api-1", "Meta": {"a": "b"}, "Port": 80}),
                true,
            ),
            (
                "example 8",
                HEALTH_CHECK,
                "Status == \"critical\" and ServiceName != \"\"",
                check("serfHealth", "critical"),
                false,
            ),
            (
                "catalog nodes",
                CATALOG_NODE,
                "Meta.zone == a or Address == \"10.0.0.5\"",
                json!({"Address": "10.0.0.5"}),
                true,
            ),
        ];
        for (name, schema, expr, element, want) in cases {
            let filter = Filter::new(expr, schema).unwrap_or_else(|e| panic!("case {name}: {e}"));
            assert_eq!(filter.matches(&element), want, "case {name}");
        }
    }

    #[test]
    fn errors() {
        let long = format!("Node == \"{}\"", "x".repeat(MAX_FILTER_BYTES));
        let cases: Vec<(&str, &'static Schema, &str, &str)> = vec![
            ("unknown selector", CATALOG_SERVICE, "ServiceFoo == x", "Selector \"ServiceFoo\" is not valid"),
            ("unknown nested selector", HEALTH_SERVICE, "Node.Foo.Bar == x", "Selector \"Node.Foo\" is not valid"),
            ("selector below a string", CATALOG_SERVICE, "Node.x == y", "Selector \"Node.x\" is not valid"),
            ("selectors are case-sensitive", CATALOG_SERVICE, "node == h1", "Selector \"node\" is not valid"),
            (
                "unknown field of a list element",
                HEALTH_SERVICE,
                "Checks.Foo == x",
                "Selector \"Checks.Foo\" is not valid",
            ),
            (
                "matches on an int",
                CATALOG_SERVICE,
                "ServicePort matches \"8\"",
                "Invalid match operator \"Matches\" for selector \"ServicePort\"",
            ),
            (
                "is empty on a string",
                CATALOG_SERVICE,
                "ServiceAddress is empty",
                "Invalid match operator \"Is Empty\" for selector \"ServiceAddress\"",
            ),
            (
                "== on a list",
                CATALOG_SERVICE,
                "ServiceTags == prod",
                "Invalid match operator \"Equal\" for selector \"ServiceTags\"",
            ),
            (
                "in on a struct",
                CATALOG_SERVICE,
                "x in ServiceWeights",
                "Invalid match operator \"In\" for selector \"ServiceWeights\"",
            ),
            (
                "== on a list of structs",
                HEALTH_SERVICE,
                "Checks == x",
                "Invalid match operator \"Equal\" for selector \"Checks\"",
            ),
            (
                "int from a word",
                CATALOG_SERVICE,
                "ServicePort == abc",
                "Failed to coerce value \"abc\" for selector \"ServicePort\": strconv.ParseInt: parsing \"abc\": invalid syntax",
            ),
            (
                "int from a float",
                CATALOG_SERVICE,
                "ServicePort == 1.5",
                "Failed to coerce value \"1.5\" for selector \"ServicePort\": strconv.ParseInt: parsing \"1.5\": invalid syntax",
            ),
            (
                "bool from a word",
                CATALOG_SERVICE,
                "ServiceEnableTagOverride == yes",
                "Failed to coerce value \"yes\" for selector \"ServiceEnableTagOverride\": strconv.ParseBool: parsing \"yes\": invalid syntax",
            ),
            (
                "bad regex",
                CATALOG_SERVICE,
                "Node matches \"(\"",
                "Failed to compile regular expression \"(\": error parsing regexp: missing closing ): `(`",
            ),
            (
                "bad regex escape",
                CATALOG_SERVICE,
                r"Node matches `a\q`",
                "Failed to compile regular expression \"a\\\\q\": error parsing regexp: invalid escape sequence: `\\q`",
            ),
            ("first error wins", CATALOG_SERVICE, "Foo == x or Bar == y", "Selector \"Foo\" is not valid"),
            (
                "bare dashed word",
                CATALOG_SERVICE,
                "Node == host-1",
                "1:13 (12): no match found, expected: \".\", \"[\", [ \\t\\r\\n], [a-zA-Z0-9_] or EOF",
            ),
            (
                "bare address",
                CATALOG_SERVICE,
                "Address == 10.0.0.5",
                "1:16 (15): rule \"number\": Invalid number literal",
            ),
            (
                "upper-case AND",
                CATALOG_SERVICE,
                "ServiceName == web AND Node == h1",
                "1:20 (19): no match found, expected: \"and\", \"or\", [ \\t\\r\\n] or EOF",
            ),
            (
                "unmatched parentheses",
                CATALOG_SERVICE,
                "(Node == h1",
                "1:12 (11): rule \"grouping\": Unmatched parentheses",
            ),
            (
                "unterminated string",
                CATALOG_SERVICE,
                "Node == \"h1",
                "1:12 (11): rule \"string\": Unterminated string literal",
            ),
            (
                "syntax before validation",
                CATALOG_SERVICE,
                "Foo == 1x",
                "1:9 (8): rule \"number\": Invalid number literal",
            ),
            ("too long", CATALOG_SERVICE, long.as_str(), "the filter is 4106 bytes long, more than the 4096 allowed"),
        ];
        for (name, schema, expr, want) in cases {
            let err = Filter::new(expr, schema).expect_err(name);
            assert_eq!(
                err.to_string(),
                format!("Failed to create boolean expression evaluator: {want}"),
                "case {name}"
            );
        }
    }

    #[test]
    fn from_query_treats_empty_as_absent() {
        let cases = [("absent", None, false), ("empty", Some(""), false), ("present", Some("Node == h1"), true)];
        for (name, raw, some) in cases {
            let filter = from_query(raw, CATALOG_SERVICE).unwrap_or_else(|e| panic!("case {name}: {e}"));
            assert_eq!(filter.is_some(), some, "case {name}");
        }
        assert!(from_query(Some(" "), CATALOG_SERVICE).is_err(), "white space alone is a syntax error, as in Consul");
    }

    #[test]
    fn error_is_a_bad_request() {
        let err = Filter::new("Foo == x", CATALOG_SERVICE).unwrap_err();
        let reg: shoal_registry::Error = err.into();
        assert!(matches!(reg, shoal_registry::Error::BadRequest(_)));
        assert_eq!(reg.http_status(), 400);
    }
}
