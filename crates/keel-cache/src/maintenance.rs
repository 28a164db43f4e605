//! Work off the request path: recording the recent hit ratios, sweeping expired and evicted
//! keys out of the index, pruning tags; and the whole-cache operations (reset, statistics).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cache::Cache;
use crate::index::Slot;
use crate::stats::CacheStats;

/// Why the sweep forgets a key.
enum Gone {
    /// Its TTL passed.
    Expired,
    /// The memory tier evicted it to stay within its bounds.
    Evicted,
}

/// Slots each write of a new key sweeps: more than one, so the sweep outpaces any rate of new
/// keys and the index stays within a small multiple of the live keys.
const SWEEP_PER_NEW_KEY: usize = 4;
/// The least the maintenance thread sweeps per second; it also sweeps a sixtieth of the index,
/// so every key is looked at within a minute when nothing else drives the sweep.
const SWEEP_PER_TICK: usize = 1000;

impl Cache {
    /// Starts the thread that runs [`Cache::maintain`] once a second while the cache lives.
    pub(crate) fn spawn_maintenance(&self) {
        let cache = Arc::downgrade(&self.inner);
        // Without the thread (if the OS refuses one) writes still sweep the index; only the
        // recent hit ratios stop advancing until the next `stats()`.
        let _ = std::thread::Builder::new()
            .name("keel-cache".into())
            .spawn(move || {
                loop {
                    let now_ms = keel_core::Clock::system().unix_ms();
                    std::thread::sleep(Duration::from_millis(1000 - now_ms % 1000));
                    let Some(inner) = cache.upgrade() else {
                        return;
                    };
                    Cache { inner }.maintain();
                }
            });
    }

    /// One round of maintenance: records the hit and miss totals for the recent ratios, sweeps
    /// part of the index and prunes part of the tags.
    fn maintain(&self) {
        let c = &self.inner.counters;
        c.recent
            .tick(self.second(self.inner.clock.now()), &c.hits, &c.misses);
        // As Redis's active expiry: while a step finds much to reclaim (a quarter of what it
        // examined), take another, up to ten a second.
        let budget = SWEEP_PER_TICK.max(self.inner.keys.len() / 60);
        for _ in 0..10 {
            let (_, reclaimed) = self.sweep(budget, false);
            if reclaimed < budget / 4 {
                break;
            }
        }
        self.inner
            .tags
            .prune_step(budget, |k, g| self.inner.keys.holds(k, g));
    }

    /// The sweep a write of a new key pays for.
    pub(crate) fn sweep_some(&self) {
        self.sweep(SWEEP_PER_NEW_KEY, false);
    }

    /// Examines up to `budget` index slots; removes and counts those whose value expired or was
    /// evicted. With `wait`, waits for a concurrent sweep instead of skipping, and also asks the
    /// memory tier about each value still referenced: an evicted value can outlive its eviction
    /// for a while (the tier frees it through epoch-based reclamation), and an explicit full
    /// sweep must count it anyway. Returns whether the sweep reached the end of the index, and
    /// how many it removed.
    fn sweep(&self, budget: usize, wait: bool) -> (bool, usize) {
        let now = self.nanos(self.inner.clock.now());
        let store = &self.inner.store;
        let judge = |key: &str, slot: &Slot| {
            if slot.expires <= now {
                Some(Gone::Expired)
            } else if !slot.held() || (wait && !store.contains_key(key)) {
                Some(Gone::Evicted)
            } else {
                None
            }
        };
        let unstore = |key: &str| {
            self.inner.store.remove(key);
        };
        let c = &self.inner.counters;
        let mut removed = 0;
        let gone = |why: Gone| {
            removed += 1;
            match why {
                Gone::Evicted => &c.evicted_size,
                Gone::Expired => &c.expired,
            }
            .fetch_add(1, Ordering::Relaxed);
        };
        let done = self.inner.keys.sweep(budget, wait, judge, unstore, gone);
        (done, removed)
    }

    /// Removes every entry. Returns how many live entries there were.
    pub fn reset(&self) -> usize {
        // Writes from now on survive the reset.
        let before = self.inner.keys.generations();
        self.inner.store.invalidate_all();
        self.inner.store.run_pending_tasks();
        let now = self.nanos(self.inner.clock.now());
        let (mut cleared, mut expired) = (0, 0);
        self.inner.keys.forget_older_than(&before, |slot| {
            if slot.expires > now {
                cleared += 1;
            } else {
                expired += 1;
            }
        });
        self.inner.tags.clear();
        let c = &self.inner.counters;
        c.cleared.fetch_add(cleared, Ordering::Relaxed);
        c.expired.fetch_add(expired, Ordering::Relaxed);
        cleared as usize
    }

    /// A snapshot of the statistics. Runs moka's pending maintenance first, so entry and byte
    /// totals are exact; evictions not yet noticed by the sweep (at most a minute old) still
    /// count in `logical_bytes` and not yet in `evictions.size`.
    pub fn stats(&self) -> CacheStats {
        let store = &self.inner.store;
        store.run_pending_tasks();
        let now = self.inner.clock.now();
        self.inner.counters.snapshot(
            self.second(now),
            self.inner.config.max_memory.bytes(),
            crate::stats::Sizes {
                sets: self.inner.keys.writes(),
                entries: store.entry_count(),
                logical_bytes: self.inner.keys.logical_bytes(),
                stored_bytes: store.weighted_size(),
            },
        )
    }

    /// Runs all pending maintenance now: moka's (evictions, expirations), then a full sweep of
    /// the index and the tags, so every eviction and expiry so far is counted. Useful in tests
    /// and before reading exact totals.
    pub fn run_pending_tasks(&self) {
        self.inner.store.run_pending_tasks();
        // The first pass finishes the round in progress, the second covers the whole index.
        self.sweep(usize::MAX, true);
        self.sweep(usize::MAX, true);
        while !self
            .inner
            .tags
            .prune_step(usize::MAX, |k, g| self.inner.keys.holds(k, g))
        {}
    }
}
