//! The key index behind cursor paging, pattern deletes and the statistics of what the memory
//! tier evicted on its own.
//!
//! Every key maps to a [`Slot`]: the generation of the write that put it there, when that write
//! expires, its logical size, and a weak reference to the stored value. The keys are split over
//! [`SHARDS`] ordered maps by a hash of the key, each behind its own lock. A write or removal of
//! a key changes the memory tier *while holding its shard's lock*, so the slot and the tier
//! always agree on which write a key holds (two concurrent writers cannot leave the index naming
//! one write and the tier holding the other). A walk visits the shards in turn and each shard in
//! key order, so a cursor is a shard number and the last key seen, and a key present throughout
//! a paged walk is visited exactly once (as Redis's `SCAN`, listings are ordered within a shard,
//! not overall).
//!
//! The memory tier evicts entries without telling anyone (an eviction listener would cost every
//! write a per-key lock inside moka). The slot's weak reference tells instead: once the tier has
//! dropped a value, nothing holds it (readers hold it only while they copy it out), and the next
//! write of the key, a listing or the sweep notices. Whoever removes a slot counts its removal,
//! so each is counted exactly once.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};

use keel_core::sync::lock;

use crate::entry::Entry;

/// How many independently locked parts the index has: few enough that the locks and the hash
/// tables' control bytes stay in the CPU caches under writes spread over many keys (with 1,024
/// shards, most such writes missed the caches on both), enough that two writers rarely meet.
pub(crate) const SHARDS: usize = 64;
/// The low bits of a generation that name the shard that handed it out.
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// Generations of values never stored (see [`detached`]) have this bit set; the shards' stay
/// below it.
const DETACHED: u64 = 1 << 63;
/// `expires` of a write that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// What the index knows of a key's latest write.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// A number unique to the write.
    pub(crate) generation: u64,
    /// Expiry as nanoseconds since the cache's origin instant, or [`NEVER`].
    pub(crate) expires: u64,
    /// The write's logical size (key + value before compression).
    pub(crate) logical: u64,
    /// The stored value, while anything (the memory tier, above all) holds it.
    pub(crate) value: Weak<Entry>,
}

impl Slot {
    /// Whether the value still exists: false once the memory tier dropped it (and no reader
    /// still holds a copy).
    pub(crate) fn held(&self) -> bool {
        self.value.strong_count() > 0
    }
}

/// What the key's slot held before a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Previous {
    /// Nothing.
    None,
    /// A write that expires at `expires` (index time), whose value was still `held`.
    Write {
        /// Its expiry.
        expires: u64,
        /// Whether its value still existed (false: evicted or expired, unnoticed so far).
        held: bool,
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

/// One independently locked part of the index.
///
/// Its totals are plain numbers changed under the shard's lock, not shared atomic counters: a
/// write takes the lock anyway, and every atomic read-modify-write it avoids is a measurable
/// part of a write's cost. Reading a total sums the shards.
#[derive(Default)]
struct Shard {
    /// Point lookups (every write's): one hash and, on a hit, one key comparison — an ordered
    /// map would compare (and fetch from memory) several keys per lookup. hashbrown's map
    /// rather than std's for `get_key_value_mut`: a rewrite finds the stored key and its slot
    /// in one lookup.
    slots: hashbrown::HashMap<Arc<str>, Slot, foldhash::fast::RandomState>,
    /// The same keys in order, for walks; changed only when a key comes or goes.
    order: BTreeSet<Arc<str>>,
    /// The sum of the slots' logical sizes.
    logical: u64,
    /// Writes recorded, ever; also numbers the shard's writes (see [`KeyIndex::write`]).
    writes: u64,
}

/// The generation of write number `n` of shard `shard`: unique in the cache, and ordered
/// within the shard. Handed out under the shard's lock rather than from one counter for the
/// whole cache, which writers on different cores would pass back and forth on every write.
fn generation(shard: usize, n: u64) -> u64 {
    (n << SHARD_BITS) | shard as u64
}

/// The generation of the `n`th value handed out without being stored: unique, and never one a
/// shard hands out.
pub(crate) fn detached(n: u64) -> u64 {
    DETACHED | n
}

impl Shard {
    fn remove(&mut self, key: &str) -> Option<Slot> {
        let slot = self.slots.remove(key)?;
        self.order.remove(key);
        self.logical -= slot.logical;
        Some(slot)
    }
}

/// A shard on cache lines of its own: writers on different cores lock different shards
/// without passing each other's lines back and forth.
#[derive(Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Every key, and the sum of their logical sizes.
pub(crate) struct KeyIndex {
    shards: Box<[Padded]>,
    /// Where the next sweep step starts.
    sweep_cursor: Mutex<Position>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
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
        lock(&self.shards[shard_of(key)].0)
    }

    /// Records a write of `key`, running `store` under the shard's lock: given the write's
    /// generation and the key as the index holds it (so a rewrite allocates no new key), it
    /// puts the value in the memory tier and returns the write's slot. Returns what the key held
    /// before, and the key too if `want_key` (a clone is an atomic increment and decrement a
    /// plain write does not need).
    pub(crate) fn write(
        &self,
        key: &str,
        want_key: bool,
        store: impl FnOnce(u64, Arc<str>) -> Slot,
    ) -> (Previous, Option<Arc<str>>) {
        let at = shard_of(key);
        let mut guard = lock(&self.shards[at].0);
        let shard = &mut *guard;
        shard.writes += 1;
        let generation = generation(at, shard.writes);
        match shard.slots.get_key_value_mut(key) {
            Some((stored, slot)) => {
                // Before `store`: replacing the value drops the old one.
                let held = slot.held();
                let write = store(generation, stored.clone());
                let kept = want_key.then(|| stored.clone());
                shard.logical += write.logical;
                let old = std::mem::replace(slot, write);
                shard.logical -= old.logical;
                let previous = Previous::Write {
                    expires: old.expires,
                    held,
                };
                (previous, kept)
            }
            None => {
                let key: Arc<str> = Arc::from(key);
                let write = store(generation, key.clone());
                shard.logical += write.logical;
                shard.slots.insert(key.clone(), write);
                let kept = want_key.then(|| key.clone());
                shard.order.insert(key);
                (Previous::None, kept)
            }
        }
    }

    /// Sums a total over the shards, locking each in turn.
    fn total(&self, of: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(|shard| of(&lock(&shard.0))).sum()
    }

    /// Where each shard's generations stand: a write from now on gets a generation at least its
    /// shard's.
    pub(crate) fn generations(&self) -> Vec<u64> {
        (0..SHARDS)
            .map(|at| generation(at, lock(&self.shards[at].0).writes + 1))
            .collect()
    }

    /// The sum of the indexed writes' logical sizes.
    pub(crate) fn logical_bytes(&self) -> u64 {
        self.total(|shard| shard.logical)
    }

    /// How many keys are indexed.
    pub(crate) fn len(&self) -> usize {
        self.total(|shard| shard.slots.len() as u64) as usize
    }

    /// How many writes were recorded.
    pub(crate) fn writes(&self) -> u64 {
        self.total(|shard| shard.writes)
    }

    /// Removes `key`'s slot if its latest write is `generation` (any write, for `None`),
    /// running `unstore` (which removes the value from the memory tier) under the shard's lock.
    /// Returns the removed slot and what `unstore` returned.
    pub(crate) fn remove<R>(
        &self,
        key: &str,
        generation: Option<u64>,
        unstore: impl FnOnce() -> R,
    ) -> Option<(Slot, R)> {
        let mut shard = self.shard(key);
        match shard.slots.get(key) {
            Some(slot) if generation.is_none_or(|g| slot.generation == g) => {
                let unstored = unstore();
                shard.remove(key).map(|slot| (slot, unstored))
            }
            _ => None,
        }
    }

    /// Whether `key`'s latest write is `generation`.
    pub(crate) fn holds(&self, key: &str, generation: u64) -> bool {
        self.shard(key)
            .slots
            .get(key)
            .is_some_and(|s| s.generation == generation)
    }

    /// When `key`'s latest write expires, if the key is indexed.
    pub(crate) fn expiry_of(&self, key: &str) -> Option<u64> {
        self.shard(key).slots.get(key).map(|s| s.expires)
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
            // Entering sixteen shards counts as examining one key, so a walk through empty
            // shards is bounded too.
            if shard != first && (shard - first) % 16 == 0 {
                if examined >= budget {
                    return Some(Position { shard, after: None });
                }
                examined += 1;
            }
            let batch: Vec<(Arc<str>, Slot)> = {
                let part = lock(&self.shards[shard].0);
                let start = match after.take() {
                    Some(key) => Bound::Excluded(key),
                    None => Bound::Included(Arc::from(prefix)),
                };
                part.order
                    .range((start, Bound::Unbounded))
                    .take_while(|key| key.starts_with(prefix))
                    .take(budget.saturating_sub(examined).saturating_add(1))
                    .filter_map(|key| Some((key.clone(), part.slots.get(key)?.clone())))
                    .collect()
            };
            let mut last: Option<Arc<str>> = None;
            for (key, slot) in batch {
                if examined >= budget {
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

    /// Examines up to `budget` slots after where the last sweep step stopped and removes those
    /// `judge` condemns (returns `Some(cause)` for), running `unstore` for each under its
    /// shard's lock and then telling `gone`. Returns whether the step reached the end of the
    /// index; the next step starts from the beginning again. Without `wait`, a step skips rather
    /// than waits while another runs: one sweeper at a time is enough.
    pub(crate) fn sweep<C>(
        &self,
        budget: usize,
        wait: bool,
        mut judge: impl FnMut(&str, &Slot) -> Option<C>,
        mut unstore: impl FnMut(&str),
        mut gone: impl FnMut(C),
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
            if let Some(cause) = judge(key, &slot)
                && self
                    .remove(key, Some(slot.generation), || unstore(key))
                    .is_some()
            {
                gone(cause);
            }
            true
        });
        let done = next.is_none();
        *cursor = next.unwrap_or_default();
        done
    }

    /// Forgets every slot whose write is older than its shard's generation in `generations`
    /// (from [`KeyIndex::generations`]), telling `gone` of each.
    pub(crate) fn forget_older_than(&self, generations: &[u64], mut gone: impl FnMut(Slot)) {
        for (shard, &before) in self.shards.iter().zip(generations) {
            let mut removed = Vec::new();
            let mut part = lock(&shard.0);
            part.slots.retain(|key, slot| {
                let keep = slot.generation >= before;
                if !keep {
                    removed.push((key.clone(), slot.clone()));
                }
                keep
            });
            for (key, slot) in &removed {
                part.order.remove(key);
                part.logical -= slot.logical;
            }
            drop(part);
            for (_, slot) in removed {
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

    /// A slot whose value nothing holds (as after an eviction).
    fn write(generation: u64, expires: u64) -> Slot {
        Slot {
            generation,
            expires,
            logical: 10,
            value: Weak::new(),
        }
    }

    /// Records a write with the given slot (its generation as the test chose it).
    fn put(index: &KeyIndex, key: &str, slot: Slot) -> Previous {
        index.write(key, false, move |_, _| slot).0
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
    fn writes_report_what_they_replaced_and_whether_it_was_held() {
        let index = KeyIndex::default();
        let held = Arc::new(crate::entry::tests::entry(1));
        let mut first = write(1, 100);
        first.value = Arc::downgrade(&held);
        assert_eq!(put(&index, "a", first), Previous::None);
        assert_eq!(
            put(&index, "a", write(2, NEVER)),
            Previous::Write {
                expires: 100,
                held: true
            }
        );
        assert_eq!(
            put(&index, "a", write(3, NEVER)),
            Previous::Write {
                expires: NEVER,
                held: false
            }
        );
        assert_eq!(index.logical_bytes(), 10);
        assert_eq!(put(&index, "b", write(4, NEVER)), Previous::None);
        assert_eq!((index.len(), index.logical_bytes()), (2, 20));
    }

    #[test]
    fn generations_are_unique_ordered_per_shard_and_apart_from_detached_ones() {
        let index = KeyIndex::default();
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            let before = index.generations();
            for i in 0..500 {
                let key = format!("k{i}");
                let mut given = 0;
                index.write(&key, false, |g, _| {
                    given = g;
                    write(g, NEVER)
                });
                assert!(seen.insert(given), "generation {given} handed out twice");
                assert!(given < DETACHED && detached(given) >= DETACHED);
                // Later than anything its shard handed out before the round began.
                assert!(given >= before[shard_of(&key)], "round {round}: {given}");
            }
        }
    }

    #[test]
    fn removing_an_old_generation_keeps_a_newer_write() {
        let index = KeyIndex::default();
        put(&index, "a", write(1, NEVER));
        put(&index, "a", write(2, NEVER));
        let mut ran = 0;
        assert!(index.remove("a", Some(1), || ran += 1).is_none());
        assert_eq!(ran, 0);
        assert!(index.holds("a", 2));
        assert!(index.remove("a", Some(2), || ran += 1).is_some());
        assert_eq!(ran, 1);
        assert_eq!((index.len(), index.logical_bytes()), (0, 0));
        put(&index, "a", write(3, NEVER));
        assert_eq!(
            index
                .remove("a", None, || 7)
                .map(|(s, r)| (s.generation, r)),
            Some((3, 7))
        );
    }

    #[test]
    fn walks_page_through_every_key_once_with_a_prefix() {
        let index = KeyIndex::default();
        for i in 0..500u64 {
            put(&index, &format!("user:{i}"), write(i + 1, NEVER));
            put(&index, &format!("other:{i}"), write(1000 + i, NEVER));
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
            put(&index, k, write(i as u64 + 1, NEVER));
        }
        // Condemn the writes of b and d.
        let condemn = |_: &str, slot: &Slot| [2, 4].contains(&slot.generation).then_some(());
        let (mut forgotten, mut unstored, mut steps) = (0, 0, 1);
        while !index.sweep(3, false, condemn, |_| unstored += 1, |()| forgotten += 1) {
            steps += 1;
        }
        assert!(steps > 1, "the budget also counts empty shards");
        assert_eq!((forgotten, unstored), (2, 2));
        assert_eq!(all_keys(&index), ["a", "c", "e"]);
        // The next step starts from the beginning again.
        let mut seen = 0;
        let judge = |_: &str, _: &Slot| {
            seen += 1;
            None::<()>
        };
        assert!(index.sweep(usize::MAX, true, judge, |_| {}, |()| {}));
        assert_eq!(seen, 3);
        assert_eq!(index.logical_bytes(), 30);
    }

    #[test]
    fn forgetting_older_writes_keeps_newer_ones() {
        let index = KeyIndex::default();
        for g in 1..=10 {
            put(&index, &format!("k{g}"), write(g, NEVER));
        }
        let mut gone = 0;
        index.forget_older_than(&[6; SHARDS], |_| gone += 1);
        assert_eq!((gone, index.len()), (5, 5));
        assert_eq!(all_keys(&index), ["k10", "k6", "k7", "k8", "k9"]);
    }
}
