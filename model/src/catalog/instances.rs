//! [`Instances`]: one service's instances, as one sorted `Vec` of shared records.
//!
//! Why this shape (measured with `bench/tests/catalog_memory.rs`): a map of node → map of ID →
//! instance cost, per instance, a 48-byte entry in the service's map of nodes and a map of its own
//! (one allocation) holding a second copy of the ID; and the DNS snapshot held a third copy of the
//! instance's ID, node, address, tags and meta. Here each instance is one `Arc<Instance>` (8 bytes
//! in the service's `Vec`), ordered by its own node and ID fields, and the snapshot shares the same
//! record ([`super::snapshot`]). A change goes through [`Instances::get_mut`], which copies the
//! record first only while a snapshot still holds the old one (`Arc::make_mut`).
//!
//! It serialises exactly as the map of node → map of ID → instance it replaces, so neither the
//! JSON nor the Raft snapshot's bincode changes.

use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Instance, Text};
use crate::VecMap;

/// One service's instances by node, then service ID (the order Consul answers in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instances {
    sorted: Vec<Arc<Instance>>,
}

impl Instances {
    fn find(&self, node: &str, id: &str) -> Result<usize, usize> {
        self.sorted.binary_search_by(|i| (i.node.as_str(), i.id.as_str()).cmp(&(node, id)))
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The instance `id` on `node`.
    pub fn get(&self, node: &str, id: &str) -> Option<&Arc<Instance>> {
        self.find(node, id).ok().map(|i| &self.sorted[i])
    }

    /// The instance `id` on `node`, to change (copied first if a snapshot shares it).
    pub fn get_mut(&mut self, node: &str, id: &str) -> Option<&mut Instance> {
        let i = self.find(node, id).ok()?;
        Some(Arc::make_mut(&mut self.sorted[i]))
    }

    /// Adds `inst`, or replaces the instance with its node and ID; returns the one replaced.
    pub fn insert(&mut self, inst: Instance) -> Option<Arc<Instance>> {
        match self.find(&inst.node, &inst.id) {
            Ok(i) => Some(std::mem::replace(&mut self.sorted[i], Arc::new(inst))),
            Err(i) => {
                // Exact room while small, then 1/8 more (as `VecMap`).
                if self.sorted.len() == self.sorted.capacity() {
                    self.sorted.reserve_exact((self.sorted.len() / 8).max(1));
                }
                self.sorted.insert(i, Arc::new(inst));
                None
            }
        }
    }

    /// Removes the instance `id` on `node`. Gives memory back once at most half of it is used.
    pub fn remove(&mut self, node: &str, id: &str) -> Option<Arc<Instance>> {
        let i = self.find(node, id).ok()?;
        let inst = self.sorted.remove(i);
        if self.sorted.len() <= self.sorted.capacity() / 2 {
            self.sorted.shrink_to_fit();
        }
        Some(inst)
    }

    /// Every instance, by node then ID.
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Instance>> {
        self.sorted.iter()
    }

    /// The instances of each node, by node name.
    pub fn by_node(&self) -> impl Iterator<Item = (&Text, &[Arc<Instance>])> {
        self.sorted.chunk_by(|a, b| a.node == b.node).map(|run| (&run[0].node, run))
    }

    /// The names of the nodes it runs on, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &Text> {
        self.by_node().map(|(node, _)| node)
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = &'a Arc<Instance>;
    type IntoIter = std::slice::Iter<'a, Arc<Instance>>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One node's run of instances, serialised as a map of ID → instance.
struct OnNode<'a>(&'a [Arc<Instance>]);

impl Serialize for OnNode<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for i in self.0 {
            m.serialize_entry(&i.id, &**i)?;
        }
        m.end()
    }
}

impl Serialize for Instances {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.by_node().count()))?;
        for (node, run) in self.by_node() {
            m.serialize_entry(node, &OnNode(run))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let nested = VecMap::<Text, VecMap<Text, Instance>>::deserialize(d)?;
        let mut sorted: Vec<Arc<Instance>> =
            nested.into_values().flat_map(|ids| ids.into_values()).map(Arc::new).collect();
        // The records' own node and ID are the keys; they were written under them.
        sorted.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
        sorted.dedup_by(|a, b| (&a.node, &a.id) == (&b.node, &b.id));
        Ok(Instances { sorted })
    }
}

impl FromIterator<Instance> for Instances {
    fn from_iter<I: IntoIterator<Item = Instance>>(iter: I) -> Self {
        let mut out = Instances::default();
        for i in iter {
            out.insert(i);
        }
        out
    }
}
