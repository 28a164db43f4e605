//! The key index behind cursor paging, pattern deletes and the statistics of what the memory
//! tier evicted on its own.
//!
//! Every key maps to a [`Slot`]: the generation of the write that put it there, when that write
//! expires and its logical size. The keys are split over [`SHARDS`] ordered maps by a hash of
//! the key, each behind its own lock, held only for a lookup or to copy out one page. A write
//! takes one shard's lock; a walk visits the shards in turn and each shard in key order, so a
//! cursor is a shard number and the last key seen, and a key present throughout a paged walk is
//! visited exactly once (as Redis's `SCAN`, listings are ordered within a shard, not overall).
//!
//! Removers name the generation they remove; a slot holding a newer write is left alone, so a
//! removal that races a rewrite never drops the newer write's key. The memory tier evicts
//! entries without telling anyone (an eviction listener would cost every write a per-key lock),
//! so the index may list keys whose values are gone; the cache's sweep finds them, and whoever
//! forgets a slot is the one who counts its removal, so each is counted exactly once.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::sync::lock;

/// How many independently locked parts the index has.
pub(crate) const SHARDS: usize = 64;
/// `expires` of a write that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// What the index knows of a key's latest write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// A number unique to the write.
    pub(crate) generation: u64,
    /// Expiry as nanoseconds since the cache's origin instant, or [`NEVER`].
    pub(crate) expires: u64,
    /// The write's logical size (key + value before compression).
    pub(crate) logical: u64,
}

/// What the key's slot held before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Previous {
    /// Nothing.
    None,
    /// A write that expires at `expires` (index time).
    Write {
        /// Its expiry.
        expires: u64,
    },
}

/// Where a walk stands: the shard, and the last key visited in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Position {
    shard: usize,
    after: Option<Arc<str>>,
}

impl Position {
    /// As an opaque cursor string: `<shard>:<last key>`.
    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.shard, self.after.as_deref().unwrap_or(""))
    }

    /// Parses [`Position::encode`]'s output; anything else starts from the beginning.
    pub(crate) fn decode(cursor: &str) -> Self {
        let Some((shard, after)) = cursor.split_once(':') else {
            return Self::default();
        };
        match shard.parse::<usize>() {
            Ok(shard) if shard < SHARDS => Self {
                shard,
                after: (!after.is_empty()).then(|| Arc::from(after)),
            },
            _ => Self::default(),
        }
    }
}

type Shard = BTreeMap<Arc<str>, Slot>;

/// Every key, and the sum of their logical sizes.
pub(crate) struct KeyIndex {
    shards: Box<[Mutex<Shard>]>,
    len: AtomicUsize,
    logical_bytes: AtomicI64,
    /// Where the next sweep step starts.
    sweep_cursor: Mutex<Position>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            len: AtomicUsize::new(0),
            logical_bytes: AtomicI64::new(0),
            sweep_cursor: Mutex::default(),
        }
    }
}

/// FNV-1a: cheap, and spreading keys evenly is all a shard choice needs.
fn shard_of(key: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 32) as usize % SHARDS
}

impl KeyIndex {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(key)])
    }

    /// Records a write of `key`. Returns what the key held before.
    pub(crate) fn record_write(&self, key: &Arc<str>, write: Slot) -> Previous {
        let previous = {
            let mut shard = self.shard(key);
            match shard.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, write)),
                None => {
                    shard.insert(key.clone(), write);
                    None
                }
            }
        };
        match previous {
            Some(old) => {
                self.add_logical(write.logical as i64 - old.logical as i64);
                Previous::Write {
                    expires: old.expires,
                }
            }
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
                self.add_logical(write.logical as i64);
                Previous::None
            }
        }
    }

    fn add_logical(&self, delta: i64) {
        self.logical_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    /// The sum of the indexed writes' logical sizes.
    pub(crate) fn logical_bytes(&self) -> u64 {
        self.logical_bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// How many keys are indexed.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Forgets `key` if its latest write is still `generation`. Returns the forgotten slot.
    pub(crate) fn forget(&self, key: &str, generation: u64) -> Option<Slot> {
        let removed = {
            let mut shard = self.shard(key);
            match shard.get(key) {
                Some(slot) if slot.generation == generation => shard.remove(key),
                _ => None,
            }
        }?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.add_logical(-(removed.logical as i64));
        Some(removed)
    }

    /// Whether `key`'s latest write is `generation`.
    pub(crate) fn holds(&self, key: &str, generation: u64) -> bool {
        self.shard(key)
            .get(key)
            .is_some_and(|s| s.generation == generation)
    }

    /// When `key`'s latest write expires, if the key is indexed.
    pub(crate) fn expiry_of(&self, key: &str) -> Option<u64> {
        self.shard(key).get(key).map(|s| s.expires)
    }

    /// Walks the keys starting with `prefix` from `from`, shard by shard and in key order within
    /// a shard, examining at most `budget` of them and calling `visit` on each until it returns
    /// `false`. Returns where to continue, or `None` when no key is left. A shard's lock is held
    /// only while a batch of its keys is copied out; `visit` runs without it.
    pub(crate) fn walk(
        &self,
        from: Position,
        prefix: &str,
        budget: usize,
        mut visit: impl FnMut(&Arc<str>, Slot) -> bool,
    ) -> Option<Position> {
        let mut examined = 0;
        let Position {
            shard: first,
            mut after,
        } = from;
        for shard in first..SHARDS {
            let batch: Vec<(Arc<str>, Slot)> = {
                let map = lock(&self.shards[shard]);
                let start = match after.take() {
                    Some(key) => Bound::Excluded(key),
                    None => Bound::Included(Arc::from(prefix)),
                };
                map.range((start, Bound::Unbounded))
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .take((budget - examined).saturating_add(1))
                    .map(|(key, slot)| (key.clone(), *slot))
                    .collect()
            };
            let mut last: Option<Arc<str>> = None;
            for (key, slot) in batch {
                if examined == budget {
                    return Some(Position { shard, after: last });
                }
                examined += 1;
                let go_on = visit(&key, slot);
                last = Some(key);
                if !go_on {
                    return Some(Position { shard, after: last });
                }
            }
        }
        None
    }

    /// Examines up to `budget` slots after where the last sweep step stopped and forgets those
    /// `judge` condemns (returns `Some(cause)` for), telling `gone` of each slot this step forgot.
    /// Returns whether the step reached the end of the index; the next step starts from the
    /// beginning again. Without `wait`, a step skips rather than waits while another runs: one
    /// sweeper at a time is enough.
    pub(crate) fn sweep<C>(
        &self,
        budget: usize,
        wait: bool,
        mut judge: impl FnMut(&str, Slot) -> Option<C>,
        mut gone: impl FnMut(&str, Slot, C),
    ) -> bool {
        let mut cursor = if wait {
            lock(&self.sweep_cursor)
        } else {
            match self.sweep_cursor.try_lock() {
                Ok(cursor) => cursor,
                Err(_) => return false,
            }
        };
        let from = std::mem::take(&mut *cursor);
        let next = self.walk(from, "", budget, |key, slot| {
            if let Some(cause) = judge(key, slot)
                && let Some(slot) = self.forget(key, slot.generation)
            {
                gone(key, slot, cause);
            }
            true
        });
        let done = next.is_none();
        *cursor = next.unwrap_or_default();
        done
    }

    /// Forgets every slot whose write is older than `generation`, telling `gone` of each.
    pub(crate) fn forget_older_than(&self, generation: u64, mut gone: impl FnMut(Slot)) {
        for shard in self.shards.iter() {
            let mut removed = Vec::new();
            lock(shard).retain(|_, slot| {
                let keep = slot.generation >= generation;
                if !keep {
                    removed.push(*slot);
                }
                keep
            });
            for slot in removed {
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.add_logical(-(slot.logical as i64));
                gone(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn write(generation: u64, expires: u64) -> Slot {
        Slot {
            generation,
            expires,
            logical: 10,
        }
    }

    fn all_keys(index: &KeyIndex) -> Vec<String> {
        let mut keys = Vec::new();
        index.walk(Position::default(), "", usize::MAX, |k, _| {
            keys.push(k.to_string());
            true
        });
        keys.sort();
        keys
    }

    #[test]
    fn writes_report_what_they_replaced() {
        let index = KeyIndex::default();
        assert_eq!(index.record_write(&key("a"), write(1, 100)), Previous::None);
        assert_eq!(
            index.record_write(&key("a"), write(2, NEVER)),
            Previous::Write { expires: 100 }
        );
        assert_eq!(index.logical_bytes(), 10);
        assert_eq!(
            index.record_write(&key("b"), write(3, NEVER)),
            Previous::None
        );
        assert_eq!((index.len(), index.logical_bytes()), (2, 20));
    }

    #[test]
    fn forgetting_an_old_generation_keeps_a_newer_write() {
        let index = KeyIndex::default();
        index.record_write(&key("a"), write(1, NEVER));
        index.record_write(&key("a"), write(2, NEVER));
        assert_eq!(index.forget("a", 1), None);
        assert!(index.holds("a", 2));
        assert!(index.forget("a", 2).is_some());
        assert_eq!((index.len(), index.logical_bytes()), (0, 0));
        assert!(!index.holds("a", 2));
    }

    #[test]
    fn walks_page_through_every_key_once_with_a_prefix() {
        let index = KeyIndex::default();
        for i in 0..500u64 {
            index.record_write(&key(&format!("user:{i}")), write(i + 1, NEVER));
            index.record_write(&key(&format!("other:{i}")), write(1000 + i, NEVER));
        }
        let mut seen = Vec::new();
        let mut from = Position::default();
        loop {
            let next = index.walk(from, "user:", 7, |k, _| {
                seen.push(k.to_string());
                true
            });
            match next {
                Some(position) => from = Position::decode(&position.encode()),
                None => break,
            }
        }
        seen.sort();
        let mut expected: Vec<String> = (0..500).map(|i| format!("user:{i}")).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn cursors_that_do_not_parse_start_over() {
        assert_eq!(Position::decode("garbage"), Position::default());
        assert_eq!(Position::decode("99999:x"), Position::default());
        let p = Position {
            shard: 3,
            after: Some(key("a:b")),
        };
        assert_eq!(Position::decode(&p.encode()), p);
    }

    #[test]
    fn sweeps_resume_where_they_stopped_and_wrap() {
        let index = KeyIndex::default();
        for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            index.record_write(&key(k), write(i as u64 + 1, NEVER));
        }
        let condemn = |k: &str, _| ["b", "d"].contains(&k).then_some(());
        let mut forgotten = 0;
        let mut steps = 1;
        while !index.sweep(2, false, condemn, |_, _, ()| forgotten += 1) {
            steps += 1;
        }
        assert_eq!(steps, 3);
        assert_eq!(forgotten, 2);
        assert_eq!(all_keys(&index), ["a", "c", "e"]);
        // The next step starts from the beginning again.
        let mut seen = 0;
        assert!(index.sweep(
            10,
            true,
            |_, _| {
                seen += 1;
                None::<()>
            },
            |_, _, ()| {}
        ));
        assert_eq!(seen, 3);
        assert_eq!(index.logical_bytes(), 30);
    }

    #[test]
    fn forgetting_older_writes_keeps_newer_ones() {
        let index = KeyIndex::default();
        for g in 1..=10 {
            index.record_write(&key(&format!("k{g}")), write(g, NEVER));
        }
        let mut gone = 0;
        index.forget_older_than(6, |_| gone += 1);
        assert_eq!((gone, index.len()), (5, 5));
        assert_eq!(all_keys(&index), ["k10", "k6", "k7", "k8", "k9"]);
    }
}
