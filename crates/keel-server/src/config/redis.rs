//! The `[redis]` section. Set `url` (or `host`) to scale out; unset, keel keeps everything
//! in-process. Node deployments' `REDIS_URL`, `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`,
//! `REDIS_DB` and `REDIS_KEY_PREFIX` are read into this section.

use std::fmt::Write;
use std::path::PathBuf;

use keel_core::{HumanDuration, Secret};
use keel_redis::{FailureMode, RedisOptions, SentinelOptions, TlsFiles};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};

use super::FieldError;

/// Redis connection settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS. Printed with the password
    /// redacted. Takes precedence over host/port/password/db.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: Option<Secret>,
    /// Host, when `url` is not set.
    pub host: Option<String>,
    /// Port, when `url` is not set.
    pub port: u16,
    /// Password, when `url` is not set.
    pub password: Option<Secret>,
    /// Database number, when `url` is not set.
    pub db: i64,
    /// Prefix of every key keel writes.
    pub key_prefix: String,
    /// How long connecting (and a health-check PING) may take.
    pub connect_timeout: HumanDuration,
    /// How long one Redis operation may take, reconnecting included, before it fails (a cache
    /// read then counts as a miss; nothing waits longer).
    pub command_timeout: HumanDuration,
    /// Multiplexed connections to Redis (each carries any number of concurrent commands).
    pub pool_size: usize,
    /// The first delay between reconnect attempts; it doubles up to `reconnect_max`.
    pub reconnect_min: HumanDuration,
    /// The longest delay between reconnect attempts.
    pub reconnect_max: HumanDuration,
    /// Redis failures in a row (timeouts, refused or dropped connections) after which keel
    /// stops calling Redis for `breaker_cool_down`.
    pub breaker_failures: u32,
    /// How long keel stops calling a failing Redis before trying one command again.
    pub breaker_cool_down: HumanDuration,
    /// Shared rate limits while Redis cannot be asked: `open` admits requests, `closed`
    /// refuses them (429). Either is counted in `keel_ratelimit_undecided_total`.
    pub rate_limit_on_outage: FailureMode,
    /// With `rediss://`: a PEM file of the CA certificates that sign Redis's certificate,
    /// instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// With `rediss://`, when Redis asks for client certificates: keel's certificate (PEM),
    /// with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// `host:port` of Redis Sentinels: keel then uses the master they name (and follows a
    /// failover); `url` (or `password`/`db`) still gives credentials, database and TLS, its
    /// host and port being replaced by the master's.
    pub sentinels: Vec<String>,
    /// The name the Sentinels monitor the master under (required with `sentinels`).
    pub sentinel_master: Option<String>,
    /// `host:port` of some nodes of a Redis Cluster: keel then uses the Cluster (it learns
    /// the other nodes and the slots from them, and follows failovers and resharding); `url`
    /// (or `password`) still gives credentials and TLS, its host and port being replaced by
    /// each node's. A Cluster has only database 0.
    pub cluster: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            host: None,
            port: 6379,
            password: None,
            db: 0,
            key_prefix: "keel:".to_owned(),
            connect_timeout: HumanDuration::from_secs(2),
            command_timeout: HumanDuration::from_millis(250),
            pool_size: 2,
            reconnect_min: HumanDuration::from_millis(50),
            reconnect_max: HumanDuration::from_secs(1),
            breaker_failures: 5,
            breaker_cool_down: HumanDuration::from_secs(1),
            rate_limit_on_outage: FailureMode::Open,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            sentinels: Vec::new(),
            sentinel_master: None,
            cluster: Vec::new(),
        }
    }
}

impl RedisConfig {
    /// Whether Redis is configured at all.
    pub fn is_configured(&self) -> bool {
        self.url.is_some()
            || self.host.is_some()
            || !self.sentinels.is_empty()
            || !self.cluster.is_empty()
    }

    /// The connection URL (with credentials), if configured.
    pub fn connection_url(&self) -> Option<Secret> {
        if let Some(url) = &self.url {
            return Some(url.clone());
        }
        // With Sentinels and no host, the host is a placeholder the master's address replaces.
        let host = match &self.host {
            Some(host) => host,
            None if !self.sentinels.is_empty() => "sentinel-master",
            None if !self.cluster.is_empty() => "cluster-node",
            None => return None,
        };
        let mut url = String::from("redis://");
        if let Some(pw) = &self.password {
            let _ = write!(url, ":{}@", percent_encode(pw.expose()));
        }
        let _ = write!(url, "{host}:{}/{}", self.port, self.db);
        Some(Secret::new(url))
    }

    /// The connection options, if Redis is configured.
    pub fn options(&self) -> Option<RedisOptions> {
        let url = self.connection_url()?;
        Some(RedisOptions {
            url,
            key_prefix: self.key_prefix.clone(),
            connect_timeout: self.connect_timeout.get(),
            command_timeout: self.command_timeout.get(),
            pool_size: self.pool_size,
            reconnect_min: self.reconnect_min.get(),
            reconnect_max: self.reconnect_max.get(),
            breaker_failures: self.breaker_failures,
            breaker_cool_down: self.breaker_cool_down.get(),
            tls: TlsFiles {
                ca_file: self.tls_ca_file.clone(),
                cert_file: self.tls_cert_file.clone(),
                key_file: self.tls_key_file.clone(),
            },
            sentinel: (!self.sentinels.is_empty()).then(|| SentinelOptions {
                addresses: self.sentinels.clone(),
                master: self.sentinel_master.clone().unwrap_or_default(),
            }),
            cluster: self.cluster.clone(),
        })
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if let Some(url) = &self.url {
            let u = url.expose();
            let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|s| u.starts_with(s));
            if !scheme_ok {
                return Err(FieldError::new(
                    "redis.url",
                    format!(
                        "must start with redis://, rediss:// or unix:// (got {})",
                        redact_url(u)
                    ),
                ));
            }
            if redis::IntoConnectionInfo::into_connection_info(u).is_err() {
                return Err(FieldError::new(
                    "redis.url",
                    format!("is not a valid Redis URL: {}", redact_url(u)),
                ));
            }
        }
        if matches!(&self.host, Some(h) if h.trim().is_empty()) {
            return Err(FieldError::new("redis.host", "must not be empty when set"));
        }
        if self.port == 0 {
            return Err(FieldError::new("redis.port", "must be between 1 and 65535"));
        }
        if !(0..=65_535).contains(&self.db) {
            return Err(FieldError::new("redis.db", "must be between 0 and 65535"));
        }
        for (field, value) in [
            ("redis.connect_timeout", &self.connect_timeout),
            ("redis.command_timeout", &self.command_timeout),
            ("redis.reconnect_min", &self.reconnect_min),
            ("redis.reconnect_max", &self.reconnect_max),
            ("redis.breaker_cool_down", &self.breaker_cool_down),
        ] {
            if value.get().is_zero() {
                return Err(FieldError::new(field, "must be greater than 0"));
            }
        }
        if self.reconnect_max.get() < self.reconnect_min.get() {
            return Err(FieldError::new(
                "redis.reconnect_max",
                "must not be below redis.reconnect_min",
            ));
        }
        if !(1..=64).contains(&self.pool_size) {
            return Err(FieldError::new(
                "redis.pool_size",
                "must be between 1 and 64",
            ));
        }
        if self.breaker_failures == 0 {
            return Err(FieldError::new(
                "redis.breaker_failures",
                "must be at least 1",
            ));
        }
        for (field, file) in [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = file
                && let Err(e) = std::fs::metadata(path)
            {
                return Err(FieldError::new(
                    field,
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        if !self.sentinels.is_empty() {
            if self
                .sentinel_master
                .as_deref()
                .is_none_or(|m| m.trim().is_empty())
            {
                return Err(FieldError::new(
                    "redis.sentinel_master",
                    "required with redis.sentinels: the name the Sentinels monitor the master under",
                ));
            }
            all_host_port("redis.sentinels", &self.sentinels)?;
        }
        if !self.cluster.is_empty() {
            if !self.sentinels.is_empty() {
                return Err(FieldError::new(
                    "redis.cluster",
                    "a Cluster is not found through Sentinels: set redis.cluster or redis.sentinels, not both",
                ));
            }
            all_host_port("redis.cluster", &self.cluster)?;
            if self.database() != Some(0) {
                return Err(FieldError::new(
                    "redis.db",
                    "a Redis Cluster has only database 0: leave the database out of redis.url and redis.db",
                ));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(FieldError::new(
                "redis.tls_key_file",
                "a client certificate needs both redis.tls_cert_file and redis.tls_key_file",
            ));
        }
        Ok(())
    }
}

impl RedisConfig {
    /// The database the connection URL selects (`None`: one that does not parse).
    fn database(&self) -> Option<i64> {
        let url = self.connection_url()?;
        let url = url.expose();
        let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
        match rest.split_once('/') {
            None => Some(0),
            Some((_, path)) => {
                let db = path.split(['?', '#']).next().unwrap_or("");
                if db.is_empty() {
                    Some(0)
                } else {
                    db.parse().ok()
                }
            }
        }
    }
}

/// Every address in `field` is `host:port`; else an error naming the first that is not.
fn all_host_port(field: &'static str, addresses: &[String]) -> Result<(), FieldError> {
    match addresses.iter().find(|a| !is_host_port(a)) {
        Some(bad) => Err(FieldError::new(field, format!("{bad:?} is not host:port"))),
        None => Ok(()),
    }
}

fn is_host_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The URL with any password replaced by `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or("", |(u, _)| u);
    let shown_user = if userinfo.contains(':') { user } else { "" };
    format!(
        "{}://{}:{}@{}",
        &url[..scheme_end],
        shown_user,
        keel_core::units::REDACTED,
        &rest[at + 1..]
    )
}

fn serialize_redacted_url<S: Serializer>(url: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&redact_url(u.expose())),
        None => s.serialize_none(),
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@cache:6379/0"),
            "redis://:[redacted]@cache:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:s3cret@cache/2"),
            "rediss://app:[redacted]@cache/2"
        );
        assert_eq!(
            redact_url("redis://tokenonly@cache"),
            "redis://:[redacted]@cache"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }

    #[test]
    fn url_from_parts() {
        let cfg = RedisConfig {
            host: Some("cache".into()),
            password: Some(Secret::new("p@ss word")),
            db: 3,
            ..RedisConfig::default()
        };
        assert!(cfg.is_configured());
        assert_eq!(
            cfg.connection_url().unwrap().expose(),
            "redis://:p%40ss%20word@cache:6379/3"
        );
        assert!(!RedisConfig::default().is_configured());
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(!json.contains("p@ss"), "{json}");
    }

    #[test]
    fn sentinels_need_a_master_name_and_addresses() {
        let mut cfg = RedisConfig {
            sentinels: vec!["10.0.0.1:26379".into()],
            password: Some(Secret::new("pw")),
            ..RedisConfig::default()
        };
        assert!(cfg.is_configured());
        assert_eq!(cfg.validate().unwrap_err().field, "redis.sentinel_master");
        cfg.sentinel_master = Some("mymaster".into());
        assert!(cfg.validate().is_ok());
        let options = cfg.options().unwrap();
        assert_eq!(options.url.expose(), "redis://:pw@sentinel-master:6379/0");
        assert_eq!(options.sentinel.unwrap().master, "mymaster");
        cfg.sentinels.push("no-port".into());
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "redis.sentinels");
        assert!(err.reason.contains("no-port"), "{}", err.reason);
    }

    #[test]
    fn a_cluster_needs_node_addresses_and_database_0() {
        let mut cfg = RedisConfig {
            cluster: vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()],
            password: Some(Secret::new("pw")),
            ..RedisConfig::default()
        };
        assert!(cfg.is_configured());
        assert!(cfg.validate().is_ok());
        let options = cfg.options().unwrap();
        assert_eq!(options.url.expose(), "redis://:pw@cluster-node:6379/0");
        assert_eq!(options.cluster.len(), 2);
        cfg.db = 3;
        assert_eq!(cfg.validate().unwrap_err().field, "redis.db");
        cfg.db = 0;
        cfg.url = Some(Secret::new("redis://:pw@x:7000/2"));
        assert_eq!(cfg.validate().unwrap_err().field, "redis.db");
        cfg.url = Some(Secret::new("rediss://:pw@x:7000"));
        assert!(cfg.validate().is_ok());
        cfg.cluster.push("no-port".into());
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "redis.cluster");
        assert!(err.reason.contains("no-port"), "{}", err.reason);
        cfg.cluster.pop();
        cfg.sentinels = vec!["10.0.0.9:26379".into()];
        cfg.sentinel_master = Some("m".into());
        assert_eq!(cfg.validate().unwrap_err().field, "redis.cluster");
    }

    #[test]
    fn validation_names_fields_without_leaking() {
        let cfg = RedisConfig {
            url: Some(Secret::new("http://:pw@x")),
            ..RedisConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.field, "redis.url");
        assert!(!err.reason.contains("pw"), "{}", err.reason);
        let cfg = RedisConfig {
            port: 0,
            ..RedisConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "redis.port");
    }
}
