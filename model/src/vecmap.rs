//! [`VecMap`]: a small ordered map kept as one sorted `Vec`, for the catalog's many tiny maps.
//!
//! Why not `BTreeMap`: std's B-tree allocates a whole leaf of 11 slots even for one entry, and the
//! catalog has several maps per instance that hold one or two entries (an instance's checks, its
//! meta, a service's instances on one node). Measured with a counting allocator
//! (`bench/tests/catalog_memory.rs`), those leaves were 6.6 of the 7.0 KB an instance cost. A
//! `VecMap` allocates exactly its entries while small, looks up by binary search
//! and inserts by shifting (exact room while small, 1/8 more when large), which is faster than a B-tree for the sizes it is used for (up to a few
//! thousand entries).
//!
//! It serialises as a map, exactly like `BTreeMap` (sorted keys), so replacing one with the other
//! changes neither the JSON nor the bincode of a snapshot: on-disk formats are untouched.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ordered map in one sorted `Vec` (see the module docs). Its API follows `BTreeMap`'s.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { entries: Vec::new() }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        VecMap { entries: Vec::new() }
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.grow();
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`, inserting `V::default()` first when there is none.
    pub fn get_or_insert_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.grow();
                self.entries.insert(i, (key, V::default()));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Removes `key`, returning its value. Gives memory back once at most half of it is used.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.find(key).ok()?;
        let (_, v) = self.entries.remove(i);
        self.shrink();
        Some(v)
    }

    /// Keeps only the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.entries.retain_mut(|(k, v)| keep(k, v));
        self.shrink();
    }

    /// Room for one more: exactly one slot while small, then 1/8 more (so large maps do not
    /// reallocate on every insert, with at most 12.5 % slack).
    fn grow(&mut self) {
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact((self.entries.len() / 8).max(1));
        }
    }

    fn shrink(&mut self) {
        if self.entries.len() <= self.entries.capacity() / 2 {
            self.entries.shrink_to_fit();
        }
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter(self.entries.iter())
    }

    /// The entries in key order, values changeable.
    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&K, &mut V)> + ExactSizeIterator {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The values in key order, changeable.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    /// The values in key order, owned.
    pub fn into_values(self) -> impl DoubleEndedIterator<Item = V> + ExactSizeIterator {
        self.entries.into_iter().map(|(_, v)| v)
    }

    /// The first entry.
    pub fn first_key_value(&self) -> Option<(&K, &V)> {
        self.entries.first().map(|(k, v)| (k, v))
    }

    /// Builds from entries in any order; of equal keys the last wins (as collecting into a `BTreeMap`).
    fn from_unsorted(mut entries: Vec<(K, V)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0)); // stable: equal keys keep their order
        let mut out: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        VecMap { entries: out }
    }
}

/// Iterator over a [`VecMap`]'s entries.
#[derive(Clone)]
pub struct Iter<'a, K, V>(std::slice::Iter<'a, (K, V)>);

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k, v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k, v))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<'a, K: Ord, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_unsorted(iter.into_iter().collect())
    }
}

impl<K: Ord, V, const N: usize> From<[(K, V); N]> for VecMap<K, V> {
    fn from(entries: [(K, V); N]) -> Self {
        Self::from_unsorted(Vec::from(entries))
    }
}

/// From a `BTreeMap` of the same or convertible types (e.g. `String` to `CompactString`, which sort
/// alike: both by bytes).
impl<K: Ord + From<K2>, V: From<V2>, K2, V2> From<BTreeMap<K2, V2>> for VecMap<K, V> {
    fn from(map: BTreeMap<K2, V2>) -> Self {
        let mut entries: Vec<(K, V)> = Vec::with_capacity(map.len());
        entries.extend(map.into_iter().map(|(k, v)| (K::from(k), V::from(v)))); // already sorted and unique
        VecMap { entries }
    }
}

impl<K: Ord + Clone, V: Clone> From<&VecMap<K, V>> for BTreeMap<K, V> {
    fn from(map: &VecMap<K, V>) -> Self {
        map.entries.iter().cloned().collect()
    }
}

impl<K: PartialEq<K2>, V: PartialEq<V2>, K2, V2> PartialEq<BTreeMap<K2, V2>> for VecMap<K, V> {
    fn eq(&self, other: &BTreeMap<K2, V2>) -> bool {
        self.entries.len() == other.len()
            && self.entries.iter().zip(other.iter()).all(|((a, x), (b, y))| a == b && x == y)
    }
}

impl<K: Ord + Borrow<Q>, Q: Ord + ?Sized, V> std::ops::Index<&Q> for VecMap<K, V> {
    type Output = V;
    /// The value of `key`; panics when there is none (as `BTreeMap`'s).
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(k, v)| (k, v))).finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
            type Value = VecMap<K, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                // Untrusted lengths are capped, as serde's own maps do.
                let mut entries = Vec::with_capacity(access.size_hint().unwrap_or(0).min(4096));
                while let Some(entry) = access.next_entry()? {
                    entries.push(entry);
                }
                Ok(VecMap::from_unsorted(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any sequence of inserts and removes leaves a `VecMap` equal to a `BTreeMap` given the same.
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((any::<bool>(), 0u8..40, any::<u16>()), 0..200)) {
            let mut v = VecMap::new();
            let mut b = BTreeMap::new();
            for (insert, k, val) in ops {
                if insert {
                    prop_assert_eq!(v.insert(k, val), b.insert(k, val));
                } else {
                    prop_assert_eq!(v.remove(&k), b.remove(&k));
                }
                prop_assert_eq!(v.get(&k), b.get(&k));
            }
            prop_assert!(v == b);
            prop_assert_eq!(v.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        }
    }

    #[test]
    fn serialises_exactly_as_a_btreemap() {
        let b = BTreeMap::from([("b".to_string(), 2u32), ("a".to_string(), 1)]);
        let v: VecMap<String, u32> = VecMap::from(b.clone());
        assert_eq!(serde_json::to_string(&v).unwrap(), serde_json::to_string(&b).unwrap());
        let back: VecMap<String, u32> = serde_json::from_str(r#"{"b":2,"a":1,"b":3}"#).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), [(&"a".to_string(), &1), (&"b".to_string(), &3)]);
    }

    #[test]
    fn allocates_exactly_its_entries() {
        let mut v = VecMap::new();
        v.insert(1u64, 1u64);
        assert_eq!(v.entries.capacity(), 1);
        v.insert(2, 2);
        assert_eq!(v.entries.capacity(), 2);
        v.remove(&1);
        v.remove(&2);
        assert_eq!(v.entries.capacity(), 0);
    }
}
