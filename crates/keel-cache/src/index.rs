//! The ordered key index behind cursor paging and pattern deletes.
//!
//! A lock-free skip list maps each key to a [`Slot`]: the generation of the write that put the
//! key there and when that write expires. Writers and the eviction listener coordinate through
//! the slot's generation alone:
//!
//! - a write swaps its generation into the existing slot (no allocation when a key is
//!   rewritten) or inserts a new slot;
//! - removal of the value with generation `g` compare-and-swaps the slot from `g` to
//!   [`TOMBSTONE`] and only then unlinks the node — a newer write in between makes the swap fail,
//!   so the newer key stays indexed;
//! - a write that swaps a tombstone out knows the node is being unlinked and inserts a fresh one.
//!
//! The index may briefly list a key whose value was just evicted; readers check the store and
//! drop such stale slots with the same protocol.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_skiplist::SkipMap;

/// A slot's generation while its node is being unlinked. Write generations start at 1.
pub(crate) const TOMBSTONE: u64 = 0;
/// `expires` of a write that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// What the index knows of a key's latest write.
pub(crate) struct Slot {
    generation: AtomicU64,
    /// Expiry as nanoseconds since the cache's origin instant, or [`NEVER`].
    expires: AtomicU64,
}

/// An entry of the index.
pub(crate) type IndexEntry<'a> = crossbeam_skiplist::map::Entry<'a, Arc<str>, Slot>;

/// Every key, ordered.
#[derive(Default)]
pub(crate) struct KeyIndex {
    map: SkipMap<Arc<str>, Slot>,
}

impl KeyIndex {
    /// Records a write of `key` with `generation`. Returns whether the key held a live
    /// (unexpired at `now`) write before.
    pub(crate) fn record_write(
        &self,
        key: &Arc<str>,
        generation: u64,
        expires: u64,
        now: u64,
    ) -> bool {
        let fresh = Slot {
            generation: AtomicU64::new(generation),
            expires: AtomicU64::new(expires),
        };
        let entry = self.map.get_or_insert(key.clone(), fresh);
        let slot = entry.value();
        let previous = slot.generation.swap(generation, Ordering::AcqRel);
        if previous == generation {
            return false; // our own fresh slot
        }
        let previous_expires = slot.expires.swap(expires, Ordering::AcqRel);
        if previous == TOMBSTONE {
            // The node is being unlinked; put a new one in its place.
            self.map.insert(
                key.clone(),
                Slot {
                    generation: AtomicU64::new(generation),
                    expires: AtomicU64::new(expires),
                },
            );
            return false;
        }
        previous_expires > now
    }

    /// Forgets `key` if its latest write is still `generation`.
    pub(crate) fn forget(&self, key: &str, generation: u64) {
        if let Some(entry) = self.map.get(key) {
            Self::forget_entry(&entry, generation);
        }
    }

    /// Unlinks `entry` if its latest write is still `generation`.
    pub(crate) fn forget_entry(entry: &IndexEntry<'_>, generation: u64) {
        let swapped = entry.value().generation.compare_exchange(
            generation,
            TOMBSTONE,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if swapped.is_ok() {
            entry.remove();
        }
    }

    /// The generation of an entry's latest write.
    pub(crate) fn generation(entry: &IndexEntry<'_>) -> u64 {
        entry.value().generation.load(Ordering::Acquire)
    }

    /// Keys from `start` (inclusive) or after `after` (exclusive), in order.
    pub(crate) fn range<'a>(
        &'a self,
        start: Bound<Arc<str>>,
    ) -> impl Iterator<Item = IndexEntry<'a>> + 'a {
        self.map.range((start, Bound::Unbounded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn writes_report_whether_a_live_write_existed() {
        let index = KeyIndex::default();
        assert!(!index.record_write(&key("a"), 1, 100, 10));
        assert!(index.record_write(&key("a"), 2, 100, 10));
        // The previous write expired at 100: a write at 150 replaces nothing live.
        assert!(!index.record_write(&key("a"), 3, NEVER, 150));
        assert!(index.record_write(&key("a"), 4, NEVER, 150));
    }

    #[test]
    fn forgetting_an_old_generation_keeps_a_newer_write() {
        let index = KeyIndex::default();
        index.record_write(&key("a"), 1, NEVER, 0);
        index.record_write(&key("a"), 2, NEVER, 0);
        index.forget("a", 1);
        assert_eq!(index.range(Bound::Unbounded).count(), 1);
        index.forget("a", 2);
        assert_eq!(index.range(Bound::Unbounded).count(), 0);
        assert!(!index.record_write(&key("a"), 3, NEVER, 0));
        assert_eq!(index.range(Bound::Unbounded).count(), 1);
    }

    #[test]
    fn a_write_racing_an_unlink_reinserts() {
        let index = KeyIndex::default();
        index.record_write(&key("a"), 1, NEVER, 0);
        let entry = index.map.get("a").unwrap();
        // The remover has swapped in the tombstone but not yet unlinked.
        entry.value().generation.store(TOMBSTONE, Ordering::Release);
        assert!(!index.record_write(&key("a"), 2, NEVER, 0));
        entry.remove();
        let remaining: Vec<u64> = index
            .range(Bound::Unbounded)
            .map(|e| KeyIndex::generation(&e))
            .collect();
        assert_eq!(remaining, vec![2]);
    }
}
