//! Exact, cheap statistics: atomic counters, plus per-second buckets for the recent hit ratio.

use keel_core::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

const WINDOW_SECONDS: u64 = 300;

/// The cache's counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) evicted_size: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) invalidated_tag: AtomicU64,
    pub(crate) invalidated_pattern: AtomicU64,
    pub(crate) cleared: AtomicU64,
    pub(crate) recent: Recent,
}

/// What the cache holds, from the memory tier and the key index.
pub(crate) struct Sizes {
    /// Writes ever, counted by the key index.
    pub(crate) sets: u64,
    pub(crate) entries: u64,
    pub(crate) logical_bytes: u64,
    pub(crate) stored_bytes: u64,
}

/// Snapshots of the hit and miss totals, at most one per second, for the recent ratios.
///
/// The read path pays one relaxed load to see whether its second already has a snapshot; only
/// the first read of a second takes one. Totals only change when reads happen, so the totals at
/// the start of a window equal the first snapshot inside it (or the current totals if there is
/// none), which makes the windowed counts exact to the second.
pub(crate) struct Recent {
    last_second: AtomicU64,
    ring: Mutex<VecDeque<(u64, u64, u64)>>,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            last_second: AtomicU64::new(u64::MAX),
            ring: Mutex::new(VecDeque::new()),
        }
    }
}

impl Recent {
    /// Records the totals at the start of `second`, once per second.
    pub(crate) fn tick(&self, second: u64, hits: &AtomicU64, misses: &AtomicU64) {
        if self.last_second.load(Ordering::Relaxed) == second
            || self.last_second.swap(second, Ordering::AcqRel) == second
        {
            return;
        }
        let mut ring = lock(&self.ring);
        ring.push_back((
            second,
            hits.load(Ordering::Acquire),
            misses.load(Ordering::Acquire),
        ));
        while ring
            .front()
            .is_some_and(|(s, ..)| *s + WINDOW_SECONDS < second)
        {
            ring.pop_front();
        }
    }

    /// Hits and misses in the `seconds` up to and including `now_second`.
    pub(crate) fn sum(&self, now_second: u64, seconds: u64, hits: u64, misses: u64) -> (u64, u64) {
        let start = now_second.saturating_sub(seconds.saturating_sub(1));
        let ring = lock(&self.ring);
        let (base_hits, base_misses) = ring
            .iter()
            .find(|(s, ..)| *s >= start)
            .map_or((hits, misses), |(_, h, m)| (*h, *m));
        (
            hits.saturating_sub(base_hits),
            misses.saturating_sub(base_misses),
        )
    }
}

/// A snapshot of the cache's statistics.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct CacheStats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (or an expired entry).
    pub misses: u64,
    /// hits / (hits + misses) since start; 0 with no reads.
    pub hit_ratio: f64,
    /// The hit ratio over the last minute.
    pub hit_ratio_1m: f64,
    /// The hit ratio over the last five minutes.
    pub hit_ratio_5m: f64,
    /// Writes.
    pub sets: u64,
    /// Entries removed by an explicit delete.
    pub deletes: u64,
    /// Entries removed, by cause.
    pub evictions: Evictions,
    /// Live entries.
    pub entries: u64,
    /// Bytes the callers stored: keys plus values before compression.
    pub logical_bytes: u64,
    /// Bytes held: keys, stored (possibly compressed) values and per-entry metadata.
    pub stored_bytes: u64,
    /// `cache.max_memory`.
    pub max_memory: u64,
}

/// Removals by cause.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Evictions {
    /// Evicted to stay within `max_memory` (or `max_entries`).
    pub size: u64,
    /// Removed because their TTL passed.
    pub expired: u64,
    /// Removed by an explicit delete.
    pub explicit: u64,
    /// Removed by a tag invalidation.
    pub tag: u64,
    /// Removed by a pattern delete.
    pub pattern: u64,
    /// Removed by a reset of the whole cache.
    pub reset: u64,
}

fn ratio(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    }
}

impl Counters {
    pub(crate) fn snapshot(&self, now_second: u64, max_memory: u64, sizes: Sizes) -> CacheStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses) = (load(&self.hits), load(&self.misses));
        self.recent.tick(now_second, &self.hits, &self.misses);
        let (h1, m1) = self.recent.sum(now_second, 60, hits, misses);
        let (h5, m5) = self.recent.sum(now_second, 300, hits, misses);
        CacheStats {
            hits,
            misses,
            hit_ratio: ratio(hits, misses),
            hit_ratio_1m: ratio(h1, m1),
            hit_ratio_5m: ratio(h5, m5),
            sets: sizes.sets,
            deletes: load(&self.deletes),
            evictions: Evictions {
                size: load(&self.evicted_size),
                expired: load(&self.expired),
                explicit: load(&self.deletes),
                tag: load(&self.invalidated_tag),
                pattern: load(&self.invalidated_pattern),
                reset: load(&self.cleared),
            },
            entries: sizes.entries,
            logical_bytes: sizes.logical_bytes,
            stored_bytes: sizes.stored_bytes,
            max_memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_windows_count_only_their_seconds() {
        let (hits, misses) = (AtomicU64::new(0), AtomicU64::new(0));
        let r = Recent::default();
        let read = |second: u64, hit: bool| {
            r.tick(second, &hits, &misses);
            if hit { &hits } else { &misses }.fetch_add(1, Ordering::Relaxed);
        };
        read(1000, true);
        read(1000, true);
        read(1030, false);
        read(1100, true);
        let totals = (hits.load(Ordering::Relaxed), misses.load(Ordering::Relaxed));
        assert_eq!(r.sum(1100, 60, totals.0, totals.1), (1, 0));
        assert_eq!(r.sum(1100, 300, totals.0, totals.1), (3, 1));
        // Nothing read since: the last minute is empty.
        assert_eq!(r.sum(1200, 60, totals.0, totals.1), (0, 0));
        assert_eq!(r.sum(1200, 300, totals.0, totals.1), (3, 1));
        assert_eq!(r.sum(1399, 300, totals.0, totals.1), (1, 0));
        assert_eq!(r.sum(1400, 300, totals.0, totals.1), (0, 0));
    }
}
