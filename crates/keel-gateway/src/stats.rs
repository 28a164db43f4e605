//! Per-route statistics: requests by status class, latency and upstream latency percentiles
//! (over the last one to two minutes), cache outcomes, bytes in and out, bytes saved by
//! compression, rate-limited requests; and the log of slow requests.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use keel_core::Clock;
use keel_core::sync::lock;
use serde::Serialize;

/// How long one latency window lasts; percentiles cover the current and the previous one.
const WINDOW: Duration = Duration::from_secs(60);

/// Slow requests kept.
const SLOW_KEPT: usize = 100;

/// Latencies in microseconds over a rolling window of one to two minutes.
struct Rolling {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    started_ms: u64,
}

impl Rolling {
    fn new(now_ms: u64) -> Self {
        let h = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds");
        Self {
            current: h(),
            previous: h(),
            started_ms: now_ms,
        }
    }

    fn rotate(&mut self, now_ms: u64) {
        let window = WINDOW.as_millis() as u64;
        if now_ms.saturating_sub(self.started_ms) >= 2 * window {
            self.previous.reset();
            self.current.reset();
            self.started_ms = now_ms;
        } else if now_ms.saturating_sub(self.started_ms) >= window {
            std::mem::swap(&mut self.previous, &mut self.current);
            self.current.reset();
            self.started_ms = now_ms;
        }
    }

    fn record(&mut self, now_ms: u64, took: Duration) {
        self.rotate(now_ms);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.current.record(us.min(3_600_000_000));
    }

    fn percentiles(&mut self, now_ms: u64) -> Percentiles {
        self.rotate(now_ms);
        let mut all = self.previous.clone();
        let _ = all.add(&self.current);
        let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: all.len(),
            p50: ms(0.50),
            p90: ms(0.90),
            p95: ms(0.95),
            p99: ms(0.99),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Percentiles {
    /// Requests measured (over the last one to two minutes).
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// How the cache answered, as counted per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheResult {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

impl CacheResult {
    pub(crate) fn from_header(value: &[u8]) -> Option<Self> {
        Some(match value {
            b"HIT" => Self::Hit,
            b"MISS" => Self::Miss,
            b"STALE" => Self::Stale,
            b"REVALIDATED" => Self::Revalidated,
            b"BYPASS" => Self::Bypass,
            _ => return None,
        })
    }
}

/// One route's counters.
pub(crate) struct RouteStats {
    clock: Clock,
    /// 1xx … 5xx.
    classes: [AtomicU64; 5],
    latency: Mutex<Rolling>,
    upstream: Mutex<Rolling>,
    cache: [AtomicU64; 5],
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bytes_saved: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats").finish_non_exhaustive()
    }
}

impl RouteStats {
    pub(crate) fn new(clock: Clock) -> Self {
        let now = clock.unix_ms();
        Self {
            clock,
            classes: Default::default(),
            latency: Mutex::new(Rolling::new(now)),
            upstream: Mutex::new(Rolling::new(now)),
            cache: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_saved: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// Counts a response: its status, its latency (to the response headers) and cache result.
    pub(crate) fn response(&self, status: u16, took: Duration, cache: Option<CacheResult>) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        if let Some(result) = cache {
            self.cache[result as usize].fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.latency).record(self.clock.unix_ms(), took);
    }

    /// Counts an upstream call's time to its response headers.
    pub(crate) fn upstream(&self, took: Duration) {
        lock(&self.upstream).record(self.clock.unix_ms(), took);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let now = self.clock.unix_ms();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let cache = CacheCounts {
            hits: get(&self.cache[CacheResult::Hit as usize]),
            misses: get(&self.cache[CacheResult::Miss as usize]),
            stale: get(&self.cache[CacheResult::Stale as usize]),
            revalidated: get(&self.cache[CacheResult::Revalidated as usize]),
            bypass: get(&self.cache[CacheResult::Bypass as usize]),
        };
        StatsSnapshot {
            requests: StatusClasses {
                informational: get(&self.classes[0]),
                success: get(&self.classes[1]),
                redirect: get(&self.classes[2]),
                client_error: get(&self.classes[3]),
                server_error: get(&self.classes[4]),
            },
            latency_ms: lock(&self.latency).percentiles(now),
            upstream_ms: lock(&self.upstream).percentiles(now),
            cache_hit_ratio: cache.hit_ratio(),
            cache,
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            bytes_saved_by_compression: get(&self.bytes_saved),
            rate_limited: get(&self.rate_limited),
        }
    }
}

/// Requests by status class.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct StatusClasses {
    /// 1xx.
    #[serde(rename = "1xx")]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// 4xx.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

/// Cache outcomes (`X-Cache`).
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Fresh from the cache.
    pub hits: u64,
    /// Fetched from the upstream.
    pub misses: u64,
    /// Served stale (while revalidating, or on an upstream error).
    pub stale: u64,
    /// Revalidated with the upstream (304).
    pub revalidated: u64,
    /// Not cacheable (method, credentials, or caching off).
    pub bypass: u64,
}

impl CacheCounts {
    /// Share of cacheable requests answered from the cache (hits, stale and revalidated).
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.stale + self.revalidated;
        let total = served + self.misses;
        if total == 0 {
            0.0
        } else {
            served as f64 / total as f64
        }
    }
}

/// One route's statistics, as the API shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsSnapshot {
    /// Responses by status class.
    pub requests: StatusClasses,
    /// Time to the response headers, over the last one to two minutes.
    pub latency_ms: Percentiles,
    /// The upstream's time to its response headers, over the last one to two minutes.
    pub upstream_ms: Percentiles,
    /// Cache outcomes.
    pub cache: CacheCounts,
    /// See [`CacheCounts::hit_ratio`].
    pub cache_hit_ratio: f64,
    /// Request body bytes passed upstream.
    pub bytes_in: u64,
    /// Response body bytes sent to clients.
    pub bytes_out: u64,
    /// Response bytes compression saved.
    pub bytes_saved_by_compression: u64,
    /// Requests refused by the rate limit.
    pub rate_limited: u64,
}

/// A request slower than `gateway.slow_threshold`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlowRequest {
    /// When it was answered (Unix ms).
    pub at: u64,
    /// The route it matched.
    pub route: String,
    /// Method and path (without the query, which may carry secrets).
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Time to the response headers, ms.
    pub duration_ms: f64,
    /// The upstream's part of it, ms (absent when the upstream was not called).
    pub upstream_ms: Option<f64>,
    /// The request id.
    pub request_id: String,
}

/// The last slow requests, newest last.
#[derive(Default)]
pub(crate) struct SlowLog {
    entries: Mutex<VecDeque<SlowRequest>>,
}

impl SlowLog {
    pub(crate) fn push(&self, entry: SlowRequest) {
        let mut entries = lock(&self.entries);
        if entries.len() == SLOW_KEPT {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Newest first.
    pub(crate) fn newest(&self, limit: usize) -> Vec<SlowRequest> {
        lock(&self.entries)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_cover_the_last_one_to_two_minutes() {
        let (clock, time) = Clock::mock();
        let stats = RouteStats::new(clock);
        for ms in 1..=100 {
            stats.response(200, Duration::from_millis(ms), Some(CacheResult::Hit));
        }
        stats.response(503, Duration::from_millis(5), Some(CacheResult::Miss));
        let s = stats.snapshot();
        assert_eq!(s.requests.success, 100);
        assert_eq!(s.requests.server_error, 1);
        assert_eq!(s.latency_ms.count, 101);
        assert!(
            (49.0..=51.0).contains(&s.latency_ms.p50),
            "{:?}",
            s.latency_ms
        );
        assert!(
            (98.0..=100.5).contains(&s.latency_ms.p99),
            "{:?}",
            s.latency_ms
        );
        assert!((s.cache_hit_ratio - 100.0 / 101.0).abs() < 1e-9);
        time.advance(Duration::from_secs(61));
        assert_eq!(
            stats.snapshot().latency_ms.count,
            101,
            "the previous minute still counts"
        );
        time.advance(Duration::from_secs(61));
        let later = stats.snapshot();
        assert_eq!(later.latency_ms.count, 0, "older than two minutes");
        assert_eq!(later.requests.success, 100, "counters are for all time");
    }

    #[test]
    fn the_slow_log_keeps_the_newest() {
        let log = SlowLog::default();
        for i in 0..150 {
            log.push(SlowRequest {
                at: i,
                route: "r".into(),
                method: "GET".into(),
                path: "/".into(),
                status: 200,
                duration_ms: 1.0,
                upstream_ms: None,
                request_id: i.to_string(),
            });
        }
        let newest = log.newest(1000);
        assert_eq!(newest.len(), SLOW_KEPT);
        assert_eq!(newest[0].at, 149);
        assert_eq!(log.newest(2).len(), 2);
    }
}
