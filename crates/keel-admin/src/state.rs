//! What the admin handlers share.

use keel_core::sync::{read, write};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use keel_auth::Authenticator;
use keel_core::system::SystemSampler;
use keel_core::{BuildInfo, Clock, HealthRegistry, History, Metrics, Shutdown};
use serde_json::Value;

use crate::history::Sample;
use crate::http_metrics::HttpMetrics;

/// A subsystem's contribution to `GET /api/v1/stats`: an async function returning JSON.
pub type StatsSource = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

/// Shared state of the admin router. Cheap to clone.
#[derive(Clone)]
pub struct AdminState(Arc<Inner>);

struct Inner {
    health: HealthRegistry,
    metrics: Metrics,
    http: Arc<HttpMetrics>,
    authenticator: Arc<Authenticator>,
    public_health: bool,
    public_metrics: bool,
    sampler: Arc<SystemSampler>,
    history: Mutex<History<Sample>>,
    sample_interval: Duration,
    shutdown: Shutdown,
    clock: Clock,
    build: BuildInfo,
    service_id: String,
    data_dir: PathBuf,
    effective_config: Value,
    stats: RwLock<Vec<(String, StatsSource)>>,
    openapi_json: OnceLock<String>,
}

/// Everything needed to build an [`AdminState`].
pub struct AdminStateBuilder {
    /// The health registry the server's subsystems registered their checks with.
    pub health: HealthRegistry,
    /// The metrics registry.
    pub metrics: Metrics,
    /// Verifies API credentials.
    pub authenticator: Arc<Authenticator>,
    /// `auth.public_health`.
    pub public_health: bool,
    /// `auth.public_metrics`.
    pub public_metrics: bool,
    /// How often the history sampler runs.
    pub sample_interval: Duration,
    /// How much history to keep.
    pub history_retention: Duration,
    /// The server's shutdown flag; readiness answers 503 once it is triggered.
    pub shutdown: Shutdown,
    /// Time source for sample timestamps.
    pub clock: Clock,
    /// An id for this instance (`serviceId` in health+json).
    pub service_id: String,
    /// The data directory, reported by `/api/v1/system/info`.
    pub data_dir: PathBuf,
    /// The effective config with secrets already redacted.
    pub effective_config: Value,
}

impl AdminStateBuilder {
    /// Builds the state; registers the HTTP metrics with the metrics registry.
    pub fn build(self) -> AdminState {
        let interval = self.sample_interval.max(Duration::from_millis(100));
        let capacity = (self.history_retention.as_millis() / interval.as_millis()).max(1) as usize;
        AdminState(Arc::new(Inner {
            http: Arc::new(HttpMetrics::new(&self.metrics)),
            health: self.health,
            metrics: self.metrics,
            authenticator: self.authenticator,
            public_health: self.public_health,
            public_metrics: self.public_metrics,
            sampler: Arc::new(SystemSampler::new()),
            history: Mutex::new(History::new(capacity)),
            sample_interval: interval,
            shutdown: self.shutdown,
            clock: self.clock,
            build: BuildInfo::current(),
            service_id: self.service_id,
            data_dir: self.data_dir,
            effective_config: self.effective_config,
            stats: RwLock::default(),
            openapi_json: OnceLock::new(),
        }))
    }
}

impl AdminState {
    /// The health registry.
    pub fn health(&self) -> &HealthRegistry {
        &self.0.health
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The HTTP API metrics.
    pub fn http(&self) -> &Arc<HttpMetrics> {
        &self.0.http
    }

    /// The credential verifier.
    pub fn authenticator(&self) -> &Authenticator {
        &self.0.authenticator
    }

    /// Whether health endpoints are public.
    pub fn public_health(&self) -> bool {
        self.0.public_health
    }

    /// Whether `/metrics` is public.
    pub fn public_metrics(&self) -> bool {
        self.0.public_metrics
    }

    /// The host and process sampler.
    pub fn sampler(&self) -> &SystemSampler {
        &self.0.sampler
    }

    /// The sampled history.
    pub fn history(&self) -> &Mutex<History<Sample>> {
        &self.0.history
    }

    /// How often the history is sampled.
    pub fn sample_interval(&self) -> Duration {
        self.0.sample_interval
    }

    /// The shutdown flag.
    pub fn shutdown(&self) -> &Shutdown {
        &self.0.shutdown
    }

    /// The time source.
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// This build.
    pub fn build(&self) -> &BuildInfo {
        &self.0.build
    }

    /// This instance's id.
    pub fn service_id(&self) -> &str {
        &self.0.service_id
    }

    /// The data directory.
    pub fn data_dir(&self) -> &PathBuf {
        &self.0.data_dir
    }

    /// The effective config, secrets redacted.
    pub fn effective_config(&self) -> &Value {
        &self.0.effective_config
    }

    /// Adds a subsystem's section to `GET /api/v1/stats` under `name`.
    pub fn register_stats<F, Fut>(&self, name: &str, source: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Value> + Send + 'static,
    {
        let source: StatsSource = Arc::new(move || Box::pin(source()));
        let mut stats = write(&self.0.stats);
        stats.retain(|(n, _)| n != name);
        stats.push((name.to_owned(), source));
    }

    /// The registered stats sources.
    pub fn stats_sources(&self) -> Vec<(String, StatsSource)> {
        read(&self.0.stats).clone()
    }

    pub(crate) fn openapi_json(&self) -> &OnceLock<String> {
        &self.0.openapi_json
    }
}
