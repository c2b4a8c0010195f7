//! `/v1/catalog/register` and `/v1/catalog/deregister`: nodes that are not cluster nodes, and
//! instances and checks nobody probes (statuses as written). Entries an agent owns are left to it.

use std::collections::BTreeMap;

use super::apply::{CheckUpdate, Context};
use super::validate::{validate_check, validate_instance};
use super::{Catalog, CheckDef, CheckSpec, ExternalNode, InstanceSpec, Source};
use crate::command::Refusal;

impl Catalog {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn catalog_register(
        &mut self,
        index: u64,
        node: &str,
        address: &str,
        meta: &BTreeMap<String, String>,
        skip_node_update: bool,
        service: &Option<InstanceSpec>,
        check: &Option<(Option<String>, CheckSpec)>,
        cx: &Context,
    ) -> Result<bool, Refusal> {
        if node.is_empty() {
            return Err(Refusal::invalid("Must provide node"));
        }
        let cluster = (cx.cluster_node)(node);
        if !cluster && address.is_empty() && !self.external_nodes.contains_key(node) {
            return Err(Refusal::invalid("Must provide address"));
        }
        if let Some(s) = service {
            validate_instance(s)?;
            if let Some(o) = self.instance(node, &s.id)
                && o.source != Source::Catalog
            {
                return Err(Refusal::conflict(format!(
                    "service {:?} on node {node:?} is registered by its {}; change it there",
                    s.id,
                    o.source.as_str()
                )));
            }
        }
        if let Some((_, c)) = check {
            validate_check(c)?;
        }
        let mut changed = false;
        if !cluster {
            let old = self.external_nodes.get(node);
            let keep = skip_node_update && old.is_some();
            let same = old.is_some_and(|o| o.address == address && &o.meta == meta);
            if !keep && !same {
                let create_index = old.map_or(index, |o| o.create_index);
                self.external_nodes.insert(
                    node.to_string(),
                    ExternalNode {
                        name: node.to_string(),
                        address: if address.is_empty() {
                            old.map(|o| o.address.clone()).unwrap_or_default()
                        } else {
                            address.to_string()
                        },
                        meta: meta.clone(),
                        create_index,
                        modify_index: index,
                    },
                );
                self.nodes_index = index;
                changed = true;
            }
        }
        if let Some(s) = service {
            let mut s = s.clone();
            // Catalog registrations carry no probes; their checks come through `check`.
            s.checks.clear();
            if let Some(old) = self.instance(node, &s.id) {
                s.checks = old
                    .checks
                    .values()
                    .map(|c| CheckSpec {
                        id: c.id.to_string(),
                        name: c.name.to_string(),
                        notes: c.notes.to_string(),
                        def: CheckDef::clone(&c.def),
                        status: c.status,
                        output: c.output.to_string(),
                    })
                    .collect();
            }
            changed |= self.register(index, node, Source::Catalog, &s, cx)?;
        }
        if let Some((sid, c)) = check {
            let sid = sid.as_deref().or(service.as_ref().map(|s| s.id.as_str())).filter(|s| !s.is_empty());
            let mut c = c.clone();
            c.def = CheckDef { kind: super::CheckKind::Manual, ..c.def };
            let status_only = self.check(node, &c.id).is_some_and(|o| o.def == c.def && o.name == c.name);
            if status_only {
                changed |= self.update_checks(
                    index,
                    node,
                    &[CheckUpdate {
                        check_id: c.id.clone(),
                        status: c.status,
                        output: c.output.clone(),
                        ttl_renewal: false,
                    }],
                );
            } else {
                changed |= self.register_check(index, node, sid, &c)?;
            }
        }
        Ok(changed)
    }

    pub(super) fn catalog_deregister(
        &mut self,
        index: u64,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> bool {
        match (service_id, check_id) {
            (Some(sid), _) => self.remove_instance(index, node, sid).is_some(),
            (None, Some(cid)) => self.remove_check(index, node, cid),
            (None, None) => {
                let had = self.external_nodes.remove(node).is_some();
                if had {
                    self.forget_node(index, node);
                    self.nodes_index = index;
                }
                had
            }
        }
    }
}
