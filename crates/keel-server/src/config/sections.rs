//! The sections the server owns: `[server]`, `[log]`, `[health]`, `[system]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use keel_core::{ByteSize, HumanDuration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::FieldError;

/// The HTTP listener, data directory and shutdown behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port of the API listener (`--listen`). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where keel keeps its files: the generated admin token, later the job store (`--data-dir`).
    pub data_dir: PathBuf,
    /// Largest request body the API accepts; larger bodies get 413.
    pub body_limit: ByteSize,
    /// How long in-flight requests may run after a shutdown signal before keel exits anyway.
    pub shutdown_grace: HumanDuration,
    /// How long keel keeps accepting requests after a shutdown signal while `/ready` answers 503,
    /// so load balancers stop sending traffic first.
    pub shutdown_delay: HumanDuration,
    /// Threads serving requests; 0 = one per CPU core; 1 = a single-threaded event loop.
    pub worker_threads: usize,
    /// This instance's id in health documents; unset = the host name.
    pub service_id: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("./keel-data"),
            body_limit: ByteSize::mib(1),
            shutdown_grace: HumanDuration::from_secs(10),
            shutdown_delay: HumanDuration::from_secs(0),
            worker_threads: 0,
            service_id: None,
        }
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(FieldError::new("server.data_dir", "must not be empty"));
        }
        if self.body_limit.bytes() == 0 {
            return Err(FieldError::new(
                "server.body_limit",
                "must be greater than 0",
            ));
        }
        if self.body_limit.bytes() > u64::from(u32::MAX) {
            return Err(FieldError::new("server.body_limit", "must be at most 4GiB"));
        }
        if self.worker_threads > 1024 {
            return Err(FieldError::new(
                "server.worker_threads",
                "must be at most 1024 (0 = one per core)",
            ));
        }
        if matches!(&self.service_id, Some(id) if id.trim().is_empty()) {
            return Err(FieldError::new(
                "server.service_id",
                "must not be empty when set",
            ));
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging. `KEEL_LOG` or `RUST_LOG`, when set, override `level`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (`--log-format`).
    pub format: LogFormat,
    /// Level filter in `tracing` syntax: `info`, `debug`, `keel_admin=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .map(|_| ())
            .map_err(|e| {
                FieldError::new("log.level", format!("invalid filter {:?}: {e}", self.level))
            })
    }
}

/// Built-in health checks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How long one check may take before it counts as `fail` with output "timed out".
    pub check_timeout: HumanDuration,
    /// Free space on the data directory's disk below which `datadir:free` warns.
    pub disk_min_free: ByteSize,
    /// System memory use, percent, at or above which `memory:utilization` warns.
    pub memory_warn_percent: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_timeout: HumanDuration::from_secs(2),
            disk_min_free: ByteSize::gib(1),
            memory_warn_percent: 90.0,
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.check_timeout.get().is_zero() {
            return Err(FieldError::new(
                "health.check_timeout",
                "must be greater than 0",
            ));
        }
        if !(self.memory_warn_percent > 0.0 && self.memory_warn_percent <= 100.0) {
            return Err(FieldError::new(
                "health.memory_warn_percent",
                "must be in (0, 100]",
            ));
        }
        Ok(())
    }
}

/// System sampling for `/api/v1/system/history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SystemConfig {
    /// Time between samples of CPU, memory, RSS, request rate, error rate and p95 latency.
    pub sample_interval: HumanDuration,
    /// How much history to keep in memory (the ring holds retention / interval samples).
    pub history_retention: HumanDuration,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            sample_interval: HumanDuration::from_secs(10),
            history_retention: HumanDuration::from_secs(24 * 3600),
        }
    }
}

impl SystemConfig {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.sample_interval.get() < std::time::Duration::from_secs(1) {
            return Err(FieldError::new(
                "system.sample_interval",
                "must be at least 1s",
            ));
        }
        if self.history_retention.get() < self.sample_interval.get() {
            return Err(FieldError::new(
                "system.history_retention",
                "must be at least system.sample_interval",
            ));
        }
        if self.history_retention.get().as_secs() / self.sample_interval.get().as_secs().max(1)
            > 1_000_000
        {
            return Err(FieldError::new(
                "system.history_retention",
                "would keep over 1,000,000 samples; raise sample_interval or lower the retention",
            ));
        }
        Ok(())
    }
}
