//! String ids of one index: each user string id maps to the int64 FAISS id the vector is
//! stored under (docs/protocol.md §4, string ids). Persisted with the per-vector metadata
//! (checkpoint) and carried by `add` WAL records, so restarts and `kill -9` keep the map.

use std::collections::HashMap;

/// The string ids of an index, both ways. Empty for an index whose ids are integers.
#[derive(Debug, Clone, Default)]
pub struct StringIds {
    by_id: HashMap<i64, String>,
    by_key: HashMap<String, i64>,
    /// One past the largest FAISS id ever given to a string id (never lowered by removals,
    /// so a removed id is not handed out again while the server runs).
    next: i64,
}

impl StringIds {
    /// Whether no string id is stored (the index's ids, if any, are integers).
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Number of string ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The string id of FAISS id `id`.
    pub fn key_of(&self, id: i64) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// The FAISS id of string id `key`.
    pub fn id_of(&self, key: &str) -> Option<i64> {
        self.by_key.get(key).copied()
    }

    /// The FAISS id for the next new string id of an index that stores ids (IDMap).
    pub fn next_id(&self) -> i64 {
        self.next
    }

    /// Map `key` to FAISS id `id` (replacing what either was mapped to).
    pub fn insert(&mut self, id: i64, key: String) {
        if let Some(old) = self.by_id.insert(id, key.clone()) {
            self.by_key.remove(&old);
        }
        if let Some(old) = self.by_key.insert(key, id) {
            if old != id {
                self.by_id.remove(&old);
            }
        }
        self.next = self.next.max(id.saturating_add(1));
    }

    /// Forget FAISS id `id`.
    pub fn remove_id(&mut self, id: i64) {
        if let Some(k) = self.by_id.remove(&id) {
            self.by_key.remove(&k);
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        *self = StringIds::default();
    }

    /// After FAISS removed the ids `gone` (sorted, deduplicated) from an index that numbers
    /// vectors by position: drop them and move every later id down past them.
    pub fn renumber_after_removal(&mut self, gone: &[i64]) {
        let old = std::mem::take(&mut self.by_id);
        self.by_key.clear();
        self.next = 0;
        for (id, key) in old {
            if gone.binary_search(&id).is_err() {
                let shift = gone.partition_point(|&g| g < id) as i64;
                self.insert(id - shift, key);
            }
        }
    }

    /// Every `(FAISS id, string id)`, by FAISS id.
    pub fn sorted(&self) -> Vec<(i64, &str)> {
        let mut v: Vec<(i64, &str)> = self.by_id.iter().map(|(&i, k)| (i, k.as_str())).collect();
        v.sort_unstable_by_key(|p| p.0);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_and_renumbering() {
        let mut k = StringIds::default();
        for (i, s) in ["a", "b", "c", "d"].iter().enumerate() {
            k.insert(i as i64, s.to_string());
        }
        assert_eq!((k.id_of("c"), k.key_of(3), k.next_id()), (Some(2), Some("d"), 4));
        k.renumber_after_removal(&[1]);
        assert_eq!(k.sorted(), vec![(0, "a"), (1, "c"), (2, "d")]);
        assert_eq!(k.id_of("b"), None);
        k.remove_id(0);
        assert_eq!((k.len(), k.id_of("a"), k.key_of(0)), (2, None, None));
    }
}
