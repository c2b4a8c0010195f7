//! The KV table: Consul's KV semantics over a sorted map, with the Raft index as every entry's version.
//!
//! Deleted keys leave a tombstone carrying the delete's index, so a blocking query on a key or prefix
//! sees its index move when something under it disappears, and the index a reader sees never goes back.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// The largest value Consul accepts (and so do we): 512 KiB.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// Raft index of the write that created the key.
    pub create_index: u64,
    /// Raft index of the last write to the key.
    pub modify_index: u64,
    /// Consul's lock counter; sessions are not implemented, so it stays 0.
    pub lock_index: u64,
    /// Opaque flags set by the client.
    pub flags: u64,
    /// The raw value.
    pub value: Vec<u8>,
}

/// The KV table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvTable {
    entries: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, u64>,
    /// Index of the last change to the table (a write or a delete that removed something).
    index: u64,
}

/// Iterates a sorted map over the keys starting with `prefix`.
fn prefixed<'a, V>(map: &'a BTreeMap<String, V>, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded)).take_while(move |(k, _)| k.starts_with(prefix))
}

impl KvTable {
    /// `PUT`: returns whether the write took effect (`false` when `cas` did not match).
    pub fn set(&mut self, index: u64, key: &str, value: Vec<u8>, flags: u64, cas: Option<u64>) -> bool {
        let current = self.entries.get(key);
        match (cas, current) {
            (Some(0), Some(_)) => return false,
            (Some(n), Some(e)) if n != 0 && e.modify_index != n => return false,
            (Some(n), None) if n != 0 => return false,
            _ => {}
        }
        let create_index = current.map_or(index, |e| e.create_index);
        self.entries
            .insert(key.to_string(), KvEntry { create_index, modify_index: index, lock_index: 0, flags, value });
        self.tombstones.remove(key);
        self.index = index;
        true
    }

    /// `DELETE`: returns whether the delete took effect (`false` when `cas` did not match).
    /// Deleting a key that does not exist is a success, as in Consul.
    pub fn delete(&mut self, index: u64, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        if recurse {
            let doomed: Vec<String> = prefixed(&self.entries, key).map(|(k, _)| k.clone()).collect();
            if doomed.is_empty() {
                return true;
            }
            for k in doomed {
                self.entries.remove(&k);
                self.tombstones.insert(k, index);
            }
            self.index = index;
            return true;
        }
        if let Some(n) = cas {
            match self.entries.get(key) {
                Some(e) if e.modify_index == n => {}
                // Consul: cas=0 on a missing key is a no-op success; any other mismatch fails.
                None if n == 0 => return true,
                _ => return false,
            }
        }
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), index);
            self.index = index;
        }
        true
    }

    /// One key.
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Every key starting with `prefix`, sorted.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a KvEntry)> + 'a {
        prefixed(&self.entries, prefix)
    }

    /// Consul `?keys`: the keys under `prefix`, rolled up after the first `separator` past the prefix.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, _) in prefixed(&self.entries, prefix) {
            let rolled = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match k[prefix.len()..].find(sep) {
                    Some(pos) => &k[..prefix.len() + pos + sep.len()],
                    None => k.as_str(),
                },
                None => k.as_str(),
            };
            if out.last().map(String::as_str) != Some(rolled) {
                out.push(rolled.to_string());
            }
        }
        out
    }

    /// The blocking-query index of a read of `key` (or of the prefix `key` when `recurse`): the
    /// highest index among the matching keys and tombstones, or the table's index when nothing
    /// matches (Consul does the same). Never below 1.
    pub fn query_index(&self, key: &str, recurse: bool) -> u64 {
        let found = if recurse {
            let live = prefixed(&self.entries, key).map(|(_, e)| e.modify_index).max();
            let dead = prefixed(&self.tombstones, key).map(|(_, i)| *i).max();
            live.max(dead)
        } else {
            self.entries.get(key).map(|e| e.modify_index).or_else(|| self.tombstones.get(key).copied())
        };
        found.unwrap_or(self.index).max(1)
    }

    /// Index of the last change to the table.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no live key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[(&str, u64)]) -> KvTable {
        let mut t = KvTable::default();
        for (k, i) in keys {
            assert!(t.set(*i, k, k.as_bytes().to_vec(), 0, None));
        }
        t
    }

    #[test]
    fn cas_cases() {
        // (name, existing modify index or none, cas, expected)
        let cases: &[(&str, Option<u64>, Option<u64>, bool)] = &[
            ("no cas on missing", None, None, true),
            ("no cas on existing", Some(3), None, true),
            ("cas 0 on missing creates", None, Some(0), true),
            ("cas 0 on existing refuses", Some(3), Some(0), false),
            ("cas matching index", Some(3), Some(3), true),
            ("cas stale index", Some(3), Some(2), false),
            ("cas n on missing", None, Some(3), false),
        ];
        for (name, existing, cas, want) in cases {
            let mut t = KvTable::default();
            if let Some(i) = existing {
                t.set(*i, "k", b"old".to_vec(), 0, None);
            }
            let got = t.set(10, "k", b"new".to_vec(), 0, *cas);
            assert_eq!(got, *want, "case {name}");
            let stored = t.get("k").map(|e| e.value.clone());
            if *want {
                assert_eq!(stored.as_deref(), Some(&b"new"[..]), "case {name}: value");
                assert_eq!(t.get("k").unwrap().modify_index, 10, "case {name}: modify index");
            } else if existing.is_some() {
                assert_eq!(stored.as_deref(), Some(&b"old"[..]), "case {name}: value kept");
            } else {
                assert!(stored.is_none(), "case {name}: nothing created");
            }
        }
    }

    #[test]
    fn create_and_modify_index_bookkeeping() {
        let mut t = KvTable::default();
        t.set(5, "a", b"1".to_vec(), 7, None);
        t.set(9, "a", b"2".to_vec(), 8, None);
        let e = t.get("a").unwrap();
        assert_eq!((e.create_index, e.modify_index, e.lock_index, e.flags), (5, 9, 0, 8));
        assert_eq!(t.index(), 9);
        // delete then re-create: a new create index
        assert!(t.delete(11, "a", false, None));
        t.set(12, "a", b"3".to_vec(), 0, None);
        assert_eq!(t.get("a").unwrap().create_index, 12);
    }

    #[test]
    fn flags_round_trip() {
        let mut t = KvTable::default();
        t.set(1, "f", vec![], u64::MAX, None);
        assert_eq!(t.get("f").unwrap().flags, u64::MAX);
        assert!(t.get("f").unwrap().value.is_empty());
    }

    #[test]
    fn recurse_is_a_prefix_match_in_order() {
        let t = table(&[("foo2", 1), ("foo1", 2), ("fo", 3), ("foo/bar", 4), ("goo", 5)]);
        let keys: Vec<&str> = t.list("foo").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["foo/bar", "foo1", "foo2"]);
        assert_eq!(t.list("").count(), 5);
    }

    #[test]
    fn keys_with_separator() {
        let t = table(&[("base/base/x", 1), ("base/base/y", 2), ("base/foo", 3), ("base/zed/a", 4), ("other", 5)]);
        let cases: &[(&str, &str, Option<&str>, &[&str])] = &[
            ("rolled up at /", "base/", Some("/"), &["base/base/", "base/foo", "base/zed/"]),
            ("no separator", "base/", None, &["base/base/x", "base/base/y", "base/foo", "base/zed/a"]),
            ("root", "", Some("/"), &["base/", "other"]),
            ("empty separator means none", "base/b", Some(""), &["base/base/x", "base/base/y"]),
            ("no match", "nope", Some("/"), &[]),
        ];
        for (name, prefix, sep, want) in cases {
            assert_eq!(t.keys(prefix, *sep), want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "case {name}");
        }
    }

    #[test]
    fn delete_cases() {
        let mut t = table(&[("a/1", 1), ("a/2", 2), ("b", 3)]);
        assert!(!t.delete(10, "b", false, Some(1)), "stale cas refused");
        assert!(t.get("b").is_some());
        assert!(t.delete(11, "b", false, Some(3)), "matching cas deletes");
        assert!(t.get("b").is_none());
        assert!(t.delete(12, "missing", false, None), "missing key is a success");
        assert!(t.delete(13, "a/", true, None));
        assert_eq!(t.len(), 0);
        assert_eq!(t.index(), 13);
    }

    #[test]
    fn query_index_never_goes_back() {
        let mut t = table(&[("a", 1), ("b", 2)]);
        assert_eq!(t.query_index("a", false), 1);
        assert_eq!(t.query_index("missing", false), 2, "missing key answers the table index");
        t.delete(3, "a", false, None);
        assert_eq!(t.query_index("a", false), 3, "deleted key answers its tombstone");
        t.set(4, "b", b"x".to_vec(), 0, None);
        assert_eq!(t.query_index("a", false), 3, "unrelated write does not move the key's index");
        assert_eq!(t.query_index("", true), 4);
        t.delete(5, "", true, None);
        assert_eq!(t.query_index("", true), 5);
        assert_eq!(KvTable::default().query_index("x", false), 1, "index is at least 1");
    }
}
