//! Invalidation epochs: how a read or write that went to Redis learns that an invalidation
//! arrived meanwhile, so it does not leave an older value in memory. Per key (hashed into
//! buckets), so the other instances' writes of other keys do not count; a pattern, tag or reset
//! invalidation, which may concern any key, moves every key's epoch.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: usize = 1024;

/// What a snapshot says: the whole-cache epoch and the key's bucket's.
pub(crate) type Epoch = (u64, u64);

pub(crate) struct Epochs {
    all: AtomicU64,
    keys: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
}

impl Default for Epochs {
    fn default() -> Self {
        Self {
            all: AtomicU64::new(0),
            keys: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl Epochs {
    fn bucket(&self, key: &str) -> &AtomicU64 {
        &self.keys[(self.hasher.hash_one(key) as usize) % BUCKETS]
    }

    /// The epochs `key` is under now.
    pub(crate) fn of(&self, key: &str) -> Epoch {
        (
            self.all.load(Ordering::Acquire),
            self.bucket(key).load(Ordering::Acquire),
        )
    }

    /// An invalidation of `key` arrives (moved before the key is dropped).
    pub(crate) fn key_invalidated(&self, key: &str) {
        self.bucket(key).fetch_add(1, Ordering::AcqRel);
    }

    /// An invalidation that may concern any key arrives.
    pub(crate) fn all_invalidated(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_moves_only_its_own_epoch_and_a_pattern_moves_all() {
        let epochs = Epochs::default();
        let (a, b) = (epochs.of("a"), epochs.of("b"));
        epochs.key_invalidated("a");
        assert_ne!(epochs.of("a"), a);
        // "b" shares a bucket with "a" once in 1,024 seeds; then it moves too (harmless).
        let b_now = epochs.of("b");
        assert!(b_now == b || b_now.1 == b.1 + 1);
        epochs.all_invalidated();
        assert_ne!(epochs.of("b"), b_now);
    }
}
