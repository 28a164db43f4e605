//! Exact, cheap statistics: atomic counters, plus per-second buckets for the recent hit ratio.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

const WINDOW_SECONDS: u64 = 300;

/// Counters shared by the cache and its eviction listener.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) sets: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) evicted_size: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) invalidated_tag: AtomicU64,
    pub(crate) invalidated_pattern: AtomicU64,
    pub(crate) cleared: AtomicU64,
    pub(crate) entries: AtomicI64,
    pub(crate) logical_bytes: AtomicI64,
    pub(crate) stored_bytes: AtomicI64,
    pub(crate) recent: Recent,
}

/// Hits and misses per second for the last five minutes. Each bucket packs the second it
/// belongs to (high 32 bits) with its count (low 32 bits), so a bucket is reset and counted in
/// one atomic step.
pub(crate) struct Recent {
    hits: Vec<AtomicU64>,
    misses: Vec<AtomicU64>,
}

impl Default for Recent {
    fn default() -> Self {
        let make = || (0..WINDOW_SECONDS).map(|_| AtomicU64::new(0)).collect();
        Self {
            hits: make(),
            misses: make(),
        }
    }
}

fn bump(bucket: &AtomicU64, second: u64) {
    let stamp = second & 0xFFFF_FFFF;
    let _ = bucket.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
        Some(if packed >> 32 == stamp {
            packed + 1
        } else {
            (stamp << 32) | 1
        })
    });
}

impl Recent {
    pub(crate) fn hit(&self, second: u64) {
        bump(&self.hits[(second % WINDOW_SECONDS) as usize], second);
    }

    pub(crate) fn miss(&self, second: u64) {
        bump(&self.misses[(second % WINDOW_SECONDS) as usize], second);
    }

    /// Hits and misses in the `seconds` up to and including `now_second`.
    pub(crate) fn sum(&self, now_second: u64, seconds: u64) -> (u64, u64) {
        let oldest = now_second.saturating_sub(seconds.min(WINDOW_SECONDS) - 1);
        let count = |buckets: &[AtomicU64]| {
            buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .filter(|packed| {
                    let stamp = packed >> 32;
                    stamp >= (oldest & 0xFFFF_FFFF) && stamp <= (now_second & 0xFFFF_FFFF)
                })
                .map(|packed| packed & 0xFFFF_FFFF)
                .sum()
        };
        (count(&self.hits), count(&self.misses))
    }
}

/// A snapshot of the cache's statistics.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    pub(crate) fn snapshot(&self, now_second: u64, max_memory: u64) -> CacheStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let load_i = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0) as u64;
        let (hits, misses) = (load(&self.hits), load(&self.misses));
        let (h1, m1) = self.recent.sum(now_second, 60);
        let (h5, m5) = self.recent.sum(now_second, 300);
        CacheStats {
            hits,
            misses,
            hit_ratio: ratio(hits, misses),
            hit_ratio_1m: ratio(h1, m1),
            hit_ratio_5m: ratio(h5, m5),
            sets: load(&self.sets),
            deletes: load(&self.deletes),
            evictions: Evictions {
                size: load(&self.evicted_size),
                expired: load(&self.expired),
                explicit: load(&self.deletes),
                tag: load(&self.invalidated_tag),
                pattern: load(&self.invalidated_pattern),
                reset: load(&self.cleared),
            },
            entries: load_i(&self.entries),
            logical_bytes: load_i(&self.logical_bytes),
            stored_bytes: load_i(&self.stored_bytes),
            max_memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_window_counts_only_its_seconds() {
        let r = Recent::default();
        r.hit(1000);
        r.hit(1000);
        r.miss(1030);
        r.hit(1100);
        assert_eq!(r.sum(1100, 60), (1, 0));
        assert_eq!(r.sum(1100, 300), (3, 1));
        // 300 seconds later the same buckets are reused for new seconds.
        r.hit(1300);
        assert_eq!(r.sum(1300, 300), (2, 1));
        assert_eq!(r.sum(1300, 60), (1, 0));
    }
}
