//! `/api/v1/system/metrics`, `/api/v1/system/info` and `/api/v1/system/history`.

use keel_core::sync::lock;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use keel_core::Problem;
use keel_core::system::{SystemSnapshot, slope_per_hour};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AdminState;
use crate::auth::{Authorized, ViewerRole};
use crate::history::Sample;

/// CPU, memory, load, and this process's RSS, threads and open file descriptors, now.
#[utoipa::path(get, path = "/system/metrics", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = SystemSnapshot)))]
pub(crate) async fn system_metrics(
    _: Authorized<ViewerRole>,
    State(state): State<AdminState>,
) -> Json<SystemSnapshot> {
    let sampler_state = state.clone();
    let snap = tokio::task::spawn_blocking(move || sampler_state.sampler().sample())
        .await
        .unwrap_or_default();
    Json(snap)
}

/// What `/api/v1/system/info` reports.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SystemInfo {
    version: &'static str,
    commit: &'static str,
    /// Operating system family, e.g. `linux`.
    platform: &'static str,
    /// The OS name and version as the OS reports it.
    os: Option<String>,
    /// CPU architecture, e.g. `x86_64`.
    arch: &'static str,
    cpu_count: usize,
    memory_total_bytes: u64,
    data_dir: String,
    service_id: String,
    /// When this process started, RFC 3339.
    started_at: String,
    /// The effective configuration, with every secret replaced by `[redacted]`.
    #[schema(value_type = Object)]
    config: Value,
}

/// Version, build, platform, CPU and memory, data directory and the effective config with
/// secrets redacted. Never environment variables, tokens, passwords or credentials.
#[utoipa::path(get, path = "/system/info", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = SystemInfo)))]
pub(crate) async fn system_info(
    _: Authorized<ViewerRole>,
    State(state): State<AdminState>,
) -> Json<SystemInfo> {
    let snap = state.sampler().sample();
    let started = UNIX_EPOCH + Duration::from_millis(state.clock().unix_ms())
        - Duration::from_secs(snap.process_uptime_seconds);
    Json(SystemInfo {
        version: state.build().version,
        commit: state.build().commit,
        platform: std::env::consts::OS,
        os: sysinfo::System::long_os_version().ok(),
        arch: std::env::consts::ARCH,
        cpu_count: snap.cpu_count,
        memory_total_bytes: snap.memory_total_bytes,
        data_dir: state.data_dir().display().to_string(),
        service_id: state.service_id().to_owned(),
        started_at: super::health::rfc3339(started),
        config: state.effective_config().clone(),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryQuery {
    /// `15m` (default), `1h`, `6h` or `24h`.
    window: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryPoint {
    /// When the sample was taken, milliseconds since the Unix epoch.
    t: u64,
    #[serde(flatten)]
    sample: Sample,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryBody {
    window: String,
    /// Seconds between samples.
    interval_seconds: f64,
    /// Least-squares slope of RSS over the window, bytes per hour (`null` under two samples).
    rss_trend_bytes_per_hour: Option<f64>,
    samples: Vec<HistoryPoint>,
}

const WINDOWS: &[(&str, u64)] = &[("15m", 900), ("1h", 3600), ("6h", 21_600), ("24h", 86_400)];

/// Sampled history of CPU, memory, RSS, request rate, error rate and p95 latency, oldest first,
/// plus the RSS trend so a leak shows as a number.
#[utoipa::path(get, path = "/system/history", tag = "system", security(("bearer" = [])), params(HistoryQuery),
    responses((status = 200, body = HistoryBody), (status = 400, body = Problem)))]
pub(crate) async fn system_history(
    _: Authorized<ViewerRole>,
    State(state): State<AdminState>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryBody>, Problem> {
    let name = query.window.unwrap_or_else(|| "15m".to_owned());
    let Some((_, secs)) = WINDOWS.iter().find(|(n, _)| *n == name) else {
        return Err(Problem::bad_request(format!(
            "window {name:?} is not supported; use one of 15m, 1h, 6h, 24h"
        )));
    };
    let now = state.clock().unix_ms();
    let samples = lock(state.history()).window(now, Duration::from_secs(*secs));
    let trend = slope_per_hour(&samples, |s| s.rss_bytes as f64);
    Ok(Json(HistoryBody {
        window: name,
        interval_seconds: state.sample_interval().as_secs_f64(),
        rss_trend_bytes_per_hour: trend,
        samples: samples
            .into_iter()
            .map(|(t, sample)| HistoryPoint { t, sample })
            .collect(),
    }))
}
