//! The queue subsystem's HTTP surface and observability: the `/api/v1/queues` and
//! `/api/v1/jobs` routes, its Prometheus series, its `queue:store` and `queue:depth` health
//! checks and its section of `/api/v1/stats`.

use axum::extract::DefaultBodyLimit;
use keel_core::CheckOutcome;
use keel_core::health::CheckSpec;
use keel_core::metrics::{Kind, PullCollector, SeriesDef};
use std::sync::Arc;

use keel_queue::{JobState, Queues, Timing};
use keel_resilience::BreakerState;
use prometheus::{HistogramOpts, HistogramVec};
use serde_json::json;

use crate::AdminState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::queues as api;
use crate::routes::{events, schedules, work};

/// The `/queues/…` and `/jobs/…` routes (to be served under `/api/v1`).
pub fn routes(queues: Queues) -> OpenApiRouter {
    // A bulk add carries up to 10,000 payloads; JSON framing on top.
    let max_payload = usize::try_from(queues.config().max_payload.bytes()).unwrap_or(usize::MAX);
    let body_limit = max_payload
        .saturating_mul(api::MAX_BULK)
        .min(256 * 1024 * 1024)
        .max(max_payload + 64 * 1024);
    OpenApiRouter::new()
        .routes(routes!(api::add_jobs, api::list_jobs, api::clean))
        .routes(routes!(api::retry_failed))
        .routes(routes!(work::fetch_jobs))
        .routes(routes!(work::complete_job))
        .routes(routes!(work::complete_many))
        .routes(routes!(work::fail_job))
        .routes(routes!(work::fail_many))
        .routes(routes!(work::heartbeat))
        .routes(routes!(work::progress))
        .routes(routes!(api::promote))
        .routes(routes!(api::retry))
        .routes(routes!(api::list_queues))
        .routes(routes!(api::queue_info, api::delete_queue))
        .routes(routes!(api::get_job, api::cancel_job))
        .routes(routes!(api::pause))
        .routes(routes!(api::resume))
        .routes(routes!(schedules::put_schedule, schedules::list_schedules))
        .routes(routes!(schedules::delete_schedule))
        .routes(routes!(events::events))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(queues)
}

/// Registers the queues' metrics, health checks and stats section with the admin state.
/// `shared_store`: the store is shared by every instance (Redis), so its outage warns instead
/// of failing readiness.
pub fn observe(state: &AdminState, queues: &Queues, shared_store: bool) {
    let defs = vec![
        SeriesDef {
            name: "keel_queue_jobs",
            help: "Jobs by queue and state (as of the last maintenance round, every queue.stall_check_interval).",
            kind: Kind::Gauge,
            labels: &["queue", "state"],
        },
        SeriesDef {
            name: "keel_queue_events_total",
            help: "What happened to jobs since start, by queue and event (added, completed, retried, failed, cancelled).",
            kind: Kind::Counter,
            labels: &["queue", "event"],
        },
        SeriesDef {
            name: "keel_queue_stalled_total",
            help: "Jobs whose lease expired without a report from their worker.",
            kind: Kind::Counter,
            labels: &[],
        },
        SeriesDef {
            name: "keel_queue_deliveries_total",
            help: "Webhook deliveries since start, by queue and outcome (delivered: 2xx; failed: any other answer, timeout, no connection).",
            kind: Kind::Counter,
            labels: &["queue", "outcome"],
        },
        SeriesDef {
            name: "keel_queue_delivery_breaker_open",
            help: "Whether a queue's webhook breaker is open (1), half-open (0.5) or closed (0).",
            kind: Kind::Gauge,
            labels: &["queue"],
        },
    ];
    let source = queues.clone();
    state.metrics().register(PullCollector::new(defs, move || {
        let mut out = Vec::new();
        for queue in source.snapshot() {
            for state in [
                JobState::Waiting,
                JobState::Delayed,
                JobState::Active,
                JobState::Completed,
                JobState::Failed,
                JobState::Cancelled,
            ] {
                let n = queue.counts.get(state.as_str()).copied().unwrap_or(0);
                out.push((
                    0,
                    vec![queue.name.clone(), state.as_str().to_owned()],
                    n as f64,
                ));
            }
        }
        for (queue, e) in source.events() {
            for (event, n) in [
                ("added", e.added),
                ("completed", e.completed),
                ("retried", e.retried),
                ("failed", e.failed),
                ("cancelled", e.cancelled),
            ] {
                out.push((1, vec![queue.clone(), event.to_owned()], n as f64));
            }
        }
        out.push((2, vec![], source.stalled() as f64));
        for (queue, d) in source.deliveries() {
            out.push((
                3,
                vec![queue.clone(), "delivered".into()],
                d.delivered as f64,
            ));
            out.push((3, vec![queue.clone(), "failed".into()], d.failed as f64));
            let open = match d.breaker {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 0.5,
                BreakerState::Open => 1.0,
            };
            out.push((4, vec![queue], open));
        }
        out
    }));

    register_timings(state, queues);

    // A shared store (Redis) is the same for every instance: its outage warns rather than
    // fails readiness, or every instance would leave the load balancer at once, with the
    // cache and the gateway that still serve without it.
    let spec = CheckSpec::new("queue", "store", "datastore");
    let spec = if shared_store { spec } else { spec.required() };
    let store = queues.clone();
    state.health().register(spec, move || {
        let queues = store.clone();
        async move {
            match queues.overview().await {
                Ok(_) => CheckOutcome::pass(),
                Err(e) if shared_store => {
                    CheckOutcome::warn(format!("the job store does not answer: {e}"))
                }
                Err(e) => CheckOutcome::fail(format!("the job store does not answer: {e}")),
            }
        }
    });

    let depth = queues.clone();
    state
        .health()
        .register(CheckSpec::new("queue", "depth", "component"), move || {
            let limit = depth.config().depth_warn;
            let deepest = depth
                .snapshot()
                .into_iter()
                .map(|q| (q.counts.get("waiting").copied().unwrap_or(0), q.name))
                .max();
            async move {
                let (waiting, queue) = deepest.unwrap_or_default();
                let outcome = if waiting > limit {
                    CheckOutcome::warn(format!(
                        "queue {queue:?} has {waiting} waiting jobs, over queue.depth_warn ({limit})"
                    ))
                } else {
                    CheckOutcome::pass()
                };
                outcome.observed(waiting as f64, "jobs")
            }
        });

    let reported = queues.clone();
    state.register_stats("queues", move || {
        let queues = reported.snapshot();
        let events = reported.events();
        let stalled = reported.stalled();
        let deliveries = reported.deliveries();
        async move {
            json!({"queues": queues, "events": events, "stalled": stalled, "deliveries": deliveries})
        }
    });
}

/// Bucket bounds (seconds) of the wait and processing histograms: 1 ms to 1 h.
const JOB_TIME_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
];

/// `keel_queue_wait_seconds` and `keel_queue_processing_seconds`, per queue.
fn register_timings(state: &AdminState, queues: &Queues) {
    let histogram = |name: &str, help: &str| {
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(JOB_TIME_BUCKETS.to_vec()),
            &["queue"],
        )
        .expect("static metric definition is valid")
    };
    let wait = histogram(
        "keel_queue_wait_seconds",
        "Time from a job being ready (added, or its delay over) to a worker starting it.",
    );
    let processing = histogram(
        "keel_queue_processing_seconds",
        "Time from a worker starting a job to its completion or failure.",
    );
    state.metrics().register(wait.clone());
    state.metrics().register(processing.clone());
    queues.observe_timings(Arc::new(move |queue, timing, ms| {
        let histogram = match timing {
            Timing::Wait => &wait,
            Timing::Processing => &processing,
        };
        histogram
            .with_label_values(&[queue])
            .observe(ms as f64 / 1000.0);
    }));
}
