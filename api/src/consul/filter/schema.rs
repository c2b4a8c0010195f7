//! The element types filters are checked against: what bexpr v0.1.2 derives from Consul's Go
//! structs by reflection, written out. Field names are Consul's JSON keys, which are also its Go
//! field names (the selectors). Fields Consul hides from bexpr (`bexpr:"-"`: the Raft indexes,
//! `Namespace`, `AgentService.Datacenter`, …) and fields Shoal never fills (`ServiceProxy`,
//! `ServiceConnect`, …) are left out, so selecting them is `Selector "…" is not valid`.

use super::parse::Op;

/// The type of one selectable field, which fixes the operators it allows and how a value is coerced.
#[derive(Debug)]
pub enum Field {
    /// A string: `==`, `!=`, `in`/`contains` (substring), `matches`.
    Str,
    /// An integer: `==`, `!=`, the value read with Go's `strconv.ParseInt(v, 0, 64)`.
    Int,
    /// A boolean: `==`, `!=`, the value read with Go's `strconv.ParseBool`.
    Bool,
    /// A list of strings: `in` (exact, case-sensitive membership), `is empty`.
    StrList,
    /// A `map[string]T`: `in` (key presence), `is empty`; `Map.key` or `Map["key"]` selects a value,
    /// which then has T's operators. `map[string]string` is `Map(&Field::Str)`.
    Map(&'static Field),
    /// A nested struct: no operators of its own, only its fields (`Weights.Passing`).
    Struct(&'static Schema),
    /// A list of structs: `is empty`; `List.Field` matches if **any** element's field does.
    StructList(&'static Schema),
}

/// A struct's selectable fields: (JSON key, type).
pub type Schema = [(&'static str, Field)];

impl Field {
    /// The operators bexpr's `generateFieldConfigurationInternal` allows for this type.
    pub(super) fn ops(&self) -> &'static [Op] {
        match self {
            Field::Str => &[Op::Equal, Op::NotEqual, Op::In, Op::NotIn, Op::Matches, Op::NotMatches],
            Field::Int | Field::Bool => &[Op::Equal, Op::NotEqual],
            Field::StrList => &[Op::In, Op::NotIn, Op::IsEmpty, Op::IsNotEmpty],
            Field::Map(_) => &[Op::IsEmpty, Op::IsNotEmpty, Op::In, Op::NotIn],
            Field::Struct(_) => &[],
            Field::StructList(_) => &[Op::IsEmpty, Op::IsNotEmpty],
        }
    }
}

const STR_MAP: Field = Field::Map(&Field::Str);

/// `Weights` (`ServiceWeights` in the catalog).
const WEIGHTS: &Schema = &[("Passing", Field::Int), ("Warning", Field::Int)];

/// The values of `TaggedAddresses` on a service (`lan_ipv4`, `wan`, …).
const SERVICE_ADDRESS: &Schema = &[("Address", Field::Str), ("Port", Field::Int)];

/// An element of `/v1/catalog/service/<name>` (Consul's `ServiceNode`).
pub const CATALOG_SERVICE: &Schema = &[
    ("ID", Field::Str),
    ("Node", Field::Str),
    ("Address", Field::Str),
    ("Datacenter", Field::Str),
    ("TaggedAddresses", STR_MAP),
    ("NodeMeta", STR_MAP),
    ("ServiceKind", Field::Str),
    ("ServiceID", Field::Str),
    ("ServiceName", Field::Str),
    ("ServiceTags", Field::StrList),
    ("ServiceAddress", Field::Str),
    ("ServiceTaggedAddresses", Field::Map(&Field::Struct(SERVICE_ADDRESS))),
    ("ServiceWeights", Field::Struct(WEIGHTS)),
    ("ServiceMeta", STR_MAP),
    ("ServicePort", Field::Int),
    ("ServiceEnableTagOverride", Field::Bool),
];

/// An element of `/v1/catalog/nodes`, and `Node` in `/v1/health/service/<name>` (Consul's `Node`).
pub const CATALOG_NODE: &Schema = &[
    ("ID", Field::Str),
    ("Node", Field::Str),
    ("Address", Field::Str),
    ("Datacenter", Field::Str),
    ("TaggedAddresses", STR_MAP),
    ("Meta", STR_MAP),
];

/// A value of `/v1/agent/services`, and `Service` in `/v1/health/service/<name>` (Consul's
/// `AgentService` / `NodeService`).
pub const AGENT_SERVICE: &Schema = &[
    ("Kind", Field::Str),
    ("ID", Field::Str),
    ("Service", Field::Str),
    ("Tags", Field::StrList),
    ("Meta", STR_MAP),
    ("Port", Field::Int),
    ("Address", Field::Str),
    ("TaggedAddresses", Field::Map(&Field::Struct(SERVICE_ADDRESS))),
    ("Weights", Field::Struct(WEIGHTS)),
    ("EnableTagOverride", Field::Bool),
];

/// A check: a value of `/v1/agent/checks`, an element of `/v1/health/state/<state>`,
/// `/v1/health/checks/<service>` and `/v1/health/node/<node>`, and of `Checks` in
/// `/v1/health/service/<name>` (Consul's `HealthCheck`).
pub const HEALTH_CHECK: &Schema = &[
    ("Node", Field::Str),
    ("CheckID", Field::Str),
    ("Name", Field::Str),
    ("Status", Field::Str),
    ("Notes", Field::Str),
    ("Output", Field::Str),
    ("ServiceID", Field::Str),
    ("ServiceName", Field::Str),
    ("ServiceTags", Field::StrList),
    ("Type", Field::Str),
];

/// An element of `/v1/health/service/<name>` (Consul's `CheckServiceNode`).
pub const HEALTH_SERVICE: &Schema = &[
    ("Node", Field::Struct(CATALOG_NODE)),
    ("Service", Field::Struct(AGENT_SERVICE)),
    ("Checks", Field::StructList(HEALTH_CHECK)),
];
