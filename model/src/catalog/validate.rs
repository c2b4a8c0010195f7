//! What a registration must satisfy before anything is stored: the HTTP API answers these with 400,
//! and the state machine refuses them, so nothing invalid is ever written.

use std::collections::BTreeMap;

use super::{CheckSpec, Health, InstanceSpec, MAX_CHECKS_PER_INSTANCE, SERF_CHECK_ID};
use crate::command::Refusal;

/// Consul's rules for a service's meta (`structs.validateMetaPair`).
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), Refusal> {
    if meta.len() > 64 {
        return Err(Refusal::invalid(format!("service meta has {} pairs; at most 64 are allowed", meta.len())));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > 128 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Refusal::invalid(format!(
                "service meta key {k:?} is invalid: use 1-128 of a-z, A-Z, 0-9, '_' and '-'"
            )));
        }
        if k.starts_with("consul-") {
            return Err(Refusal::invalid(format!("service meta key {k:?} is reserved (prefix \"consul-\")")));
        }
        if v.len() > 512 {
            return Err(Refusal::invalid(format!("service meta value of {k:?} is longer than 512 bytes")));
        }
    }
    Ok(())
}

/// Checks one check's definition: what the HTTP API answers with 400 and the state machine refuses.
pub fn validate_check(c: &CheckSpec) -> Result<(), Refusal> {
    if c.id.is_empty() {
        return Err(Refusal::invalid("a check needs an ID"));
    }
    if c.id == SERF_CHECK_ID {
        return Err(Refusal::invalid(format!("check ID {SERF_CHECK_ID:?} is reserved for the node's liveness")));
    }
    if c.def.kind.is_probed() && c.def.interval_ms == 0 {
        return Err(Refusal::invalid(format!(
            "check {:?}: a {} check needs an interval greater than 0 (e.g. \"10s\")",
            c.id,
            c.def.kind.type_name()
        )));
    }
    if let super::CheckKind::Ttl { ttl_ms: 0 } = c.def.kind {
        return Err(Refusal::invalid(format!("check {:?}: a TTL check needs a TTL greater than 0", c.id)));
    }
    if c.status == Health::Maintenance {
        return Err(Refusal::invalid("a check's status must be passing, warning or critical"));
    }
    Ok(())
}

/// Checks an instance as a client wrote it: what the HTTP API answers with 400 and the state
/// machine refuses, so nothing invalid is ever stored.
pub fn validate_instance(spec: &InstanceSpec) -> Result<(), Refusal> {
    if spec.name.is_empty() {
        return Err(Refusal::invalid("a service needs a name"));
    }
    if spec.id.is_empty() {
        return Err(Refusal::invalid("a service needs an ID"));
    }
    if spec.weights.passing == 0 || spec.weights.passing > 65535 || spec.weights.warning > 65535 {
        return Err(Refusal::invalid("service weights: Passing must be 1-65535 and Warning 0-65535"));
    }
    validate_meta(&spec.meta)?;
    if spec.checks.len() > MAX_CHECKS_PER_INSTANCE {
        return Err(Refusal::invalid(format!("a service may have at most {MAX_CHECKS_PER_INSTANCE} checks")));
    }
    let mut ids = std::collections::BTreeSet::new();
    for c in &spec.checks {
        validate_check(c)?;
        if !ids.insert(c.id.as_str()) {
            return Err(Refusal::invalid(format!("check ID {:?} is given twice", c.id)));
        }
    }
    Ok(())
}
