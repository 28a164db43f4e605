//! keel's configuration: one struct per subsystem, composed into [`Config`].
//!
//! Sources, lowest precedence first: built-in defaults, the TOML file, environment variables
//! (`KEEL_<SECTION>_<FIELD>`, plus `REDIS_URL`/`REDIS_HOST`/… as Node deployments set them), and
//! command-line flags. See [`load`] for the merge and `docs/configuration.md` for every key.
//!
//! # Layout
//! - `sections`: the sections owned by the server itself (`[server]`, `[log]`, `[health]`,
//!   `[system]`); `[auth]` comes from `keel-auth`; [`redis`]: `[redis]`.
//! - [`load`]: reading, merging and validating, with errors that name the key.
//! - [`schema`]: the key list derived from the structs (types, defaults, docs, env names).
//! - [`render`]: the commented default `keel.toml` and the Markdown reference.

pub mod load;
pub mod redis;
pub mod render;
pub mod schema;
mod sections;

use keel_auth::AuthConfig;
use keel_cache::CacheConfig;
use keel_gateway::GatewayConfig;
use keel_queue::{QueueBackend, QueueConfig, QueueSettings};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use load::{ConfigError, ConfigSources, Overrides};
pub use redis::RedisConfig;
pub use sections::{HealthConfig, LogConfig, LogFormat, ServerConfig, SystemConfig};

/// The whole keel configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener, data directory and shutdown behaviour.
    pub server: ServerConfig,
    /// Logging.
    pub log: LogConfig,
    /// Credentials for the API and which endpoints are public.
    pub auth: AuthConfig,
    /// Built-in health checks.
    pub health: HealthConfig,
    /// System sampling for `/api/v1/system/history`.
    pub system: SystemConfig,
    /// The cache: memory bound, default TTL, compression, value size limit.
    pub cache: CacheConfig,
    /// The job queue: durability, payload limit, leases, stalled-job recovery.
    pub queue: QueueConfig,
    /// Redis, for scaling out across instances. Unset = everything stays in-process.
    pub redis: RedisConfig,
    /// Queues declared ahead of use, with their limits and job defaults (`[[queues]]`).
    pub queues: Vec<QueueSettings>,
    /// The gateway: a reverse proxy in front of your app, on its own listener.
    pub gateway: GatewayConfig,
}

/// A config value that is wrong, with the key path that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The key path, e.g. `server.listen` or `auth.tokens[0].role`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl FieldError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Checks every section's values beyond their types.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.server.validate()?;
        self.log.validate()?;
        self.auth
            .validate()
            .map_err(|e| FieldError::new(e.field, e.reason))?;
        self.health.validate()?;
        self.system.validate()?;
        self.cache
            .validate()
            .map_err(|e| FieldError::new(e.field, e.reason))?;
        self.queue
            .validate()
            .map_err(|e| FieldError::new(e.field, e.reason))?;
        self.redis.validate()?;
        if self.queue.backend == QueueBackend::Redis && self.redis.connection_url().is_none() {
            return Err(FieldError::new(
                "queue.backend",
                "\"redis\" needs a Redis: set redis.url (or redis.host, redis.sentinels or redis.cluster)",
            ));
        }
        QueueSettings::validate_all(&self.queues)
            .map_err(|e| FieldError::new(e.field, e.reason))?;
        self.gateway
            .validate()
            .map_err(|e| FieldError::new(e.field, e.reason))?;
        Ok(())
    }

    /// The config as JSON with every secret replaced by `[redacted]`, for `system/info` and
    /// `keel config check`.
    pub fn redacted_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The config as TOML with secrets redacted and unset keys left out.
    pub fn redacted_toml(&self) -> String {
        fn drop_nulls(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(map) => {
                    map.retain(|_, v| !v.is_null());
                    map.values_mut().for_each(drop_nulls);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
                _ => {}
            }
        }
        let mut value = self.redacted_json();
        drop_nulls(&mut value);
        toml::to_string(&value).unwrap_or_else(|e| format!("# cannot render as TOML: {e}\n"))
    }
}
