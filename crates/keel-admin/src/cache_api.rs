//! The cache subsystem's HTTP surface and observability: the `/api/v1/cache` routes, its
//! Prometheus series, its `cache:memory` health check and its section of `/api/v1/stats`.

use axum::extract::DefaultBodyLimit;
use keel_core::CheckOutcome;
use keel_core::health::CheckSpec;
use keel_core::metrics::{Kind, PullCollector, SeriesDef};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::cache_service::CacheService;
use crate::routes::cache as api;

/// Share of `max_memory` above which `cache:memory` warns.
pub const MEMORY_WARN_RATIO: f64 = 0.9;

/// The `/cache/…` routes (to be served under `/api/v1`).
pub fn routes(cache: CacheService) -> OpenApiRouter {
    // Bulk bodies carry base64 (4/3 of the bytes) plus JSON framing.
    let max_value =
        usize::try_from(cache.memory().config().max_value_size.bytes()).unwrap_or(usize::MAX);
    let body_limit = max_value.saturating_mul(4) / 3 + 1024 * 1024;
    OpenApiRouter::new()
        .routes(routes!(api::put_key, api::get_key, api::delete_key))
        .routes(routes!(api::list_keys, api::delete_keys))
        .routes(routes!(api::mget))
        .routes(routes!(api::mset))
        .routes(routes!(api::delete_tag))
        .routes(routes!(api::reset))
        .routes(routes!(api::stats))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(cache)
}

/// Registers the cache's metrics, health check and stats section with the admin state. Hits
/// and misses count both tiers; entries, bytes and evictions are the memory tier's.
pub fn observe(state: &AdminState, service: &CacheService) {
    let cache = service.memory();
    let defs = vec![
        SeriesDef {
            name: "keel_cache_hits_total",
            help: "Cache reads that found a live entry.",
            kind: Kind::Counter,
            labels: &[],
        },
        SeriesDef {
            name: "keel_cache_misses_total",
            help: "Cache reads that found nothing.",
            kind: Kind::Counter,
            labels: &[],
        },
        SeriesDef {
            name: "keel_cache_sets_total",
            help: "Cache writes.",
            kind: Kind::Counter,
            labels: &[],
        },
        SeriesDef {
            name: "keel_cache_evictions_total",
            help: "Cache entries removed, by cause (size, expired, explicit, tag, pattern, reset).",
            kind: Kind::Counter,
            labels: &["cause"],
        },
        SeriesDef {
            name: "keel_cache_entries",
            help: "Live cache entries.",
            kind: Kind::Gauge,
            labels: &[],
        },
        SeriesDef {
            name: "keel_cache_bytes",
            help: "Cache bytes: logical (keys + values as stored by callers), stored (as held, with metadata), max (cache.max_memory).",
            kind: Kind::Gauge,
            labels: &["kind"],
        },
        SeriesDef {
            name: "keel_cache_l2_reads_total",
            help: "Memory-tier misses looked up in Redis, by result (hit, miss, error).",
            kind: Kind::Counter,
            labels: &["result"],
        },
    ];
    let source = service.clone();
    state.metrics().register(PullCollector::new(defs, move || {
        let s = source.memory().stats();
        let tiers = match &source {
            CacheService::Tiered(tiered) => Some(tiered.stats()),
            CacheService::Memory(_) => None,
        };
        let (hits, misses) = tiers
            .as_ref()
            .map_or((s.hits, s.misses), |t| (t.hits, t.misses));
        let e = &s.evictions;
        let mut out = vec![
            (0, vec![], hits as f64),
            (1, vec![], misses as f64),
            (2, vec![], s.sets as f64),
        ];
        if let Some(t) = &tiers {
            for (result, n) in [
                ("hit", t.l2.hits),
                ("miss", t.l2.misses),
                ("error", t.l2.errors),
            ] {
                out.push((6, vec![result.to_owned()], n as f64));
            }
        }
        for (cause, n) in [
            ("size", e.size),
            ("expired", e.expired),
            ("explicit", e.explicit),
            ("tag", e.tag),
            ("pattern", e.pattern),
            ("reset", e.reset),
        ] {
            out.push((3, vec![cause.to_owned()], n as f64));
        }
        out.push((4, vec![], s.entries as f64));
        for (kind, n) in [
            ("logical", s.logical_bytes),
            ("stored", s.stored_bytes),
            ("max", s.max_memory),
        ] {
            out.push((5, vec![kind.to_owned()], n as f64));
        }
        out
    }));

    let checked = cache.clone();
    state
        .health()
        .register(CheckSpec::new("cache", "memory", "component"), move || {
            let stats = checked.stats();
            async move {
                let used = stats.stored_bytes as f64 / stats.max_memory.max(1) as f64;
                let percent = (used * 1000.0).round() / 10.0;
                let outcome = if used > MEMORY_WARN_RATIO {
                    CheckOutcome::warn(format!(
                        "cache holds {percent}% of cache.max_memory; entries are being evicted"
                    ))
                } else {
                    CheckOutcome::pass()
                };
                outcome.observed(percent, "percent")
            }
        });

    let reported = service.clone();
    state.register_stats("cache", move || {
        let stats = reported.stats();
        async move { stats }
    });
}
