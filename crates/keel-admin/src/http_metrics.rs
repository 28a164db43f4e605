//! Per-route request counters and latency histograms for keel's own HTTP API.
//!
//! Prometheus gets `keel_http_requests_total{route,method,status}` (status as a class, `2xx`…)
//! and `keel_http_request_duration_seconds{route,method}` with explicit buckets. The route label
//! is the route template (`/api/v1/queues/{q}`), never the raw path, so cardinality stays bounded.
//! A second, windowed HDR histogram feeds the sampled history (request rate, error rate, p95).

use keel_core::sync::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// Latency buckets, seconds: from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The HTTP series and the current sampling window.
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    total: AtomicU64,
    server_errors: AtomicU64,
    window: Mutex<Window>,
}

struct Window {
    latency_us: Histogram<u64>,
    count: u64,
    errors: u64,
    started: Instant,
}

impl Window {
    fn new() -> Self {
        Self {
            // 1 µs .. 1 h at 2 significant digits; creation only fails on invalid bounds.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            count: 0,
            errors: 0,
            started: Instant::now(),
        }
    }
}

/// What happened in one sampling window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    /// Requests per second.
    pub request_rate: f64,
    /// 5xx responses per second.
    pub error_rate: f64,
    /// 95th percentile latency, milliseconds (0 with no requests).
    pub p95_ms: f64,
}

impl HttpMetrics {
    /// Creates the series and registers them with `metrics`.
    pub fn new(metrics: &keel_core::Metrics) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "keel_http_requests_total",
                "Requests to keel's HTTP API by route template, method and status class.",
            ),
            &["route", "method", "status"],
        )
        .expect("static metric definition is valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "keel_http_request_duration_seconds",
                "Latency of keel's HTTP API by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("static metric definition is valid");
        metrics.register(requests.clone());
        metrics.register(duration.clone());
        Self {
            requests,
            duration,
            total: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            window: Mutex::new(Window::new()),
        }
    }

    /// Records one finished request.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[route, method, class])
            .inc();
        self.duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
        self.total.fetch_add(1, Ordering::Relaxed);
        let is_error = status >= 500;
        if is_error {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut w = lock(&self.window);
        w.latency_us.saturating_record(micros);
        w.count += 1;
        w.errors += u64::from(is_error);
    }

    /// Closes the current window and starts a new one.
    pub fn take_window(&self) -> WindowStats {
        let mut w = lock(&self.window);
        let old = std::mem::replace(&mut *w, Window::new());
        drop(w);
        let secs = old.started.elapsed().as_secs_f64().max(0.001);
        WindowStats {
            request_rate: old.count as f64 / secs,
            error_rate: old.errors as f64 / secs,
            p95_ms: if old.count == 0 {
                0.0
            } else {
                old.latency_us.value_at_quantile(0.95) as f64 / 1000.0
            },
        }
    }

    /// Requests served since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// 5xx responses since start.
    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_counts_classes_and_window() {
        let registry = keel_core::Metrics::new(&keel_core::BuildInfo::current());
        let m = HttpMetrics::new(&registry);
        for _ in 0..19 {
            m.record("/alive", "GET", 200, Duration::from_millis(1));
        }
        m.record("/api/v1/x", "POST", 503, Duration::from_millis(100));
        assert_eq!(m.total(), 20);
        assert_eq!(m.server_errors(), 1);
        let text = registry.encode();
        assert!(
            text.contains(
                r#"keel_http_requests_total{method="GET",route="/alive",status="2xx"} 19"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"keel_http_requests_total{method="POST",route="/api/v1/x",status="5xx"} 1"#
        ));
        assert!(text.contains(r#"keel_http_request_duration_seconds_bucket{method="GET",route="/alive",le="0.001"} 19"#));
        let w = m.take_window();
        assert!(w.request_rate > 0.0 && w.error_rate > 0.0);
        // 19 of 20 at 1 ms: the 95th percentile is the first 1 ms value.
        assert!((w.p95_ms - 1.0).abs() < 0.05, "{w:?}");
        let empty = m.take_window();
        assert_eq!(empty.p95_ms, 0.0);
    }
}
