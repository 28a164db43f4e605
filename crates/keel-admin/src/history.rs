//! The background sampler behind `/api/v1/system/history`: every `system.sample_interval` it
//! records CPU, memory, RSS and the HTTP window (request rate, error rate, p95) into a bounded ring.

use keel_core::sync::lock;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::AdminState;

/// One point of history.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct Sample {
    /// Machine CPU use, percent.
    pub cpu_percent: f64,
    /// Machine memory use, percent.
    pub memory_percent: f64,
    /// This process's resident set size, bytes.
    pub rss_bytes: u64,
    /// HTTP API requests per second over the interval.
    pub request_rate: f64,
    /// HTTP API 5xx responses per second over the interval.
    pub error_rate: f64,
    /// HTTP API 95th percentile latency over the interval, milliseconds.
    pub p95_ms: f64,
}

/// Takes one sample now and stores it at the clock's current time.
pub fn record_sample(state: &AdminState) -> Sample {
    let snap = state.sampler().sample();
    let window = state.http().take_window();
    let sample = Sample {
        cpu_percent: snap.cpu_system_percent,
        memory_percent: snap.memory_used_percent,
        rss_bytes: snap.process_rss_bytes,
        request_rate: window.request_rate,
        error_rate: window.error_rate,
        p95_ms: window.p95_ms,
    };
    let now = state.clock().unix_ms();
    lock(state.history()).push(now, sample);
    sample
}

/// Spawns the sampler; it takes a first sample at once and stops when shutdown begins.
pub fn spawn_sampler(state: AdminState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(state.sample_interval());
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = state.shutdown().clone();
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let s = state.clone();
                    // sysinfo reads /proc synchronously; keep it off the async workers.
                    let _ = tokio::task::spawn_blocking(move || record_sample(&s)).await;
                }
                () = shutdown.wait() => break,
            }
        }
    })
}
