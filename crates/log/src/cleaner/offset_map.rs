//! The cleaner's key → latest offset map for the dirty part of a log (Kafka's SkimpyOffsetMap), bounded by
//! `log.cleaner.dedupe.buffer.size`. Keys are stored whole rather than hashed, so two keys never collide; the
//! memory bound counts them.

use std::collections::HashMap;

/// Rough per-entry overhead of the hash map (hash, pointers, the offset), for the memory bound.
const ENTRY_OVERHEAD: usize = 48;

pub(crate) struct OffsetMap {
    map: HashMap<Box<[u8]>, i64>,
    bytes: usize,
    limit: usize,
}

impl OffsetMap {
    pub(crate) fn new(limit: usize) -> OffsetMap {
        OffsetMap { map: HashMap::new(), bytes: 0, limit }
    }

    /// Records `offset` as the latest for `key` (offsets arrive in increasing order).
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) {
        match self.map.get_mut(key) {
            Some(o) => *o = offset,
            None => {
                self.bytes += key.len() + ENTRY_OVERHEAD;
                self.map.insert(key.into(), offset);
            }
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        self.map.get(key).copied()
    }

    /// The memory budget is used up: the map stops growing at the next segment boundary.
    pub(crate) fn is_full(&self) -> bool {
        self.bytes >= self.limit
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_wins_and_budget_is_counted() {
        let mut m = OffsetMap::new(200);
        m.put(b"a", 1);
        m.put(b"b", 2);
        m.put(b"a", 3);
        assert_eq!((m.get(b"a"), m.get(b"b"), m.get(b"c")), (Some(3), Some(2), None));
        assert_eq!(m.len(), 2);
        assert!(!m.is_full());
        for i in 0..10u8 {
            m.put(&[i; 10], 10 + i64::from(i));
        }
        assert!(m.is_full());
    }
}
