//! The `[queue]` config section.

use std::collections::BTreeMap;

use keel_core::{ByteSize, HumanDuration, Secret};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::{Backoff, BackoffKind, QueueLimits, RateLimit};
use crate::sqlite::Durability;
use crate::store::Retention;

/// What a commit of the job store waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Survives a crash of keel (`kill -9`); the last commits may be lost on power loss.
    #[default]
    Normal,
    /// Every commit reaches the disk before it is answered; survives power loss; slower.
    Full,
}

impl From<DurabilityMode> for Durability {
    fn from(mode: DurabilityMode) -> Self {
        match mode {
            DurabilityMode::Normal => Durability::Normal,
            DurabilityMode::Full => Durability::Full,
        }
    }
}

/// Where the jobs live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// Embedded SQLite under the data directory: one keel instance.
    #[default]
    Sqlite,
    /// Redis (the `[redis]` section): every keel instance on the same Redis shares the queues.
    Redis,
}

/// The job queue.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Where jobs live: `sqlite` (embedded, one instance) or `redis` (shared by every keel
    /// instance on the same Redis; needs the `[redis]` section).
    pub backend: QueueBackend,
    /// With `backend = "sqlite"`: `normal` (survives a keel crash) or `full` (also survives power loss, at an fsync per
    /// commit).
    pub durability: DurabilityMode,
    /// Largest job payload accepted (JSON text).
    pub max_payload: ByteSize,
    /// Lease of fetched jobs when the worker asks for none.
    pub default_lease: HumanDuration,
    /// Times a job's lease may expire (worker died or hung) before the job fails.
    pub max_stalls: u32,
    /// How often expired leases are looked for.
    pub stall_check_interval: HumanDuration,
    /// Longest a fetch may wait for jobs.
    pub max_fetch_wait: HumanDuration,
    /// Completed jobs kept per queue (the newest); older ones are deleted in the background.
    pub keep_completed: u64,
    /// Failed jobs kept per queue (and as many cancelled ones).
    pub keep_failed: u64,
    /// Finished jobs older than this are deleted whatever their number; "0" = no age limit.
    pub keep_for: HumanDuration,
    /// The `queue:depth` health check warns when a queue has more waiting jobs than this.
    pub depth_warn: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            backend: QueueBackend::Sqlite,
            durability: DurabilityMode::Normal,
            max_payload: ByteSize::mib(1),
            default_lease: HumanDuration::from_secs(30),
            max_stalls: 1,
            stall_check_interval: HumanDuration::from_secs(1),
            max_fetch_wait: HumanDuration::from_secs(60),
            keep_completed: 1_000,
            keep_failed: 5_000,
            keep_for: HumanDuration::from_secs(0),
            depth_warn: 1_000,
        }
    }
}

/// A problem in the `[queue]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct QueueConfigError {
    /// The key path, e.g. `queue.max_payload`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl QueueConfig {
    /// What the background pruning keeps.
    pub fn retention(&self) -> Retention {
        Retention {
            completed: self.keep_completed,
            failed: self.keep_failed,
            max_age: Some(self.keep_for.get()).filter(|d| !d.is_zero()),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), QueueConfigError> {
        let err = |field, reason| Err(QueueConfigError { field, reason });
        if self.max_payload.bytes() == 0 || self.max_payload.bytes() > 64 * 1024 * 1024 {
            return err("queue.max_payload", "must be between 1 byte and 64MiB");
        }
        if self.default_lease.get().is_zero() {
            return err("queue.default_lease", "must be longer than 0");
        }
        if self.stall_check_interval.get().is_zero() {
            return err("queue.stall_check_interval", "must be longer than 0");
        }
        Ok(())
    }
}

/// One `[[queues]]` entry: a queue declared in config, with its limits and its jobs' default
/// options. Queues not declared are created on first use with no limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// The queue's name.
    pub name: String,
    /// Most jobs active at once, across all workers; unset = no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Jobs started per window across all workers, e.g. `{ max = 1000, per = "5s" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Jobs of one group started per window (each tenant its own budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_rate_limit: Option<RateLimit>,
    /// Attempts of a job that names none (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Backoff of a job that names none (default exponential from 2 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSettings>,
    /// Completed jobs this queue keeps (default `queue.keep_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_completed: Option<u64>,
    /// Failed (and as many cancelled) jobs this queue keeps (default `queue.keep_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<u64>,
    /// Finished jobs older than this go whatever their number (default `queue.keep_for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<HumanDuration>,
    /// Push the queue's jobs to the app's webhook instead of waiting for workers to pull them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<DeliverSettings>,
}

/// Webhook delivery of a queue's jobs: keel POSTs each job to `url` and records the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverSettings {
    /// Where jobs are POSTed, `http://host:port/path` (the app beside keel; `https` is not
    /// supported).
    pub url: String,
    /// Deliveries in flight at once.
    #[serde(default = "default_deliver_concurrency")]
    pub concurrency: u32,
    /// How long the app may take to answer; then the attempt fails (and is retried).
    #[serde(default = "default_deliver_timeout")]
    pub timeout: HumanDuration,
    /// Extra request headers (values are redacted wherever the config is shown).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Key of the `Keel-Signature` HMAC-SHA256 header; unset = requests are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Failed deliveries in a row (no answer, timeout, 5xx) that open the endpoint's breaker:
    /// jobs then wait instead of hammering a down app.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker waits before one trial delivery.
    #[serde(default = "default_breaker_cool_down")]
    pub breaker_cool_down: HumanDuration,
}

fn default_deliver_concurrency() -> u32 {
    10
}

fn default_deliver_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_cool_down() -> HumanDuration {
    HumanDuration::from_secs(30)
}

impl DeliverSettings {
    /// Settings for `url` with every default.
    pub fn to(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            concurrency: default_deliver_concurrency(),
            timeout: default_deliver_timeout(),
            headers: BTreeMap::new(),
            secret: None,
            breaker_failures: default_breaker_failures(),
            breaker_cool_down: default_breaker_cool_down(),
        }
    }

    fn validate(&self, at: &str) -> Result<(), QueueSettingsError> {
        let err = |field: &str, reason: String| {
            Err(QueueSettingsError {
                field: format!("{at}.deliver.{field}"),
                reason,
            })
        };
        match reqwest::Url::parse(&self.url) {
            Ok(url) if url.scheme() == "http" && url.host().is_some() => {}
            Ok(url) => {
                return err(
                    "url",
                    format!(
                        "{:?}: only http:// URLs with a host are supported",
                        url.scheme()
                    ),
                );
            }
            Err(e) => return err("url", format!("not a URL: {e}")),
        }
        if self.concurrency == 0 {
            return err("concurrency", "must be at least 1".into());
        }
        if self.timeout.get().is_zero() {
            return err("timeout", "must be longer than 0".into());
        }
        if self.breaker_failures == 0 {
            return err("breaker_failures", "must be at least 1".into());
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return err("headers", format!("{name:?} is not a header name"));
            }
        }
        Ok(())
    }
}

/// A backoff as the config writes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSettings {
    /// `fixed` or `exponential`.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub kind: BackoffKind,
    /// The first wait, e.g. `"2s"`.
    pub delay: HumanDuration,
    /// The longest wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
    /// Randomises each wait by up to this fraction either way (0–1).
    #[serde(default)]
    pub jitter: f64,
}

impl BackoffSettings {
    /// The model's backoff.
    pub fn to_backoff(&self) -> Backoff {
        let ms = |d: HumanDuration| u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX);
        Backoff {
            kind: self.kind,
            delay_ms: ms(self.delay),
            max_delay_ms: self.max_delay.map(ms),
            jitter: self.jitter,
        }
    }
}

impl QueueSettings {
    /// This queue's own retention over `default`, if it sets any of it.
    pub fn retention(&self, default: Retention) -> Option<Retention> {
        if self.keep_completed.is_none() && self.keep_failed.is_none() && self.keep_for.is_none() {
            return None;
        }
        Some(Retention {
            completed: self.keep_completed.unwrap_or(default.completed),
            failed: self.keep_failed.unwrap_or(default.failed),
            max_age: match self.keep_for {
                Some(age) => Some(age.get()).filter(|d| !d.is_zero()),
                None => default.max_age,
            },
        })
    }

    /// The limits the store enforces.
    pub fn limits(&self) -> QueueLimits {
        QueueLimits {
            concurrency: self.concurrency,
            rate: self.rate_limit,
            group_rate: self.group_rate_limit,
        }
    }

    /// Checks every entry (`queues[i].…` names the field); names must be unique.
    pub fn validate_all(all: &[Self]) -> Result<(), QueueSettingsError> {
        let err = |i: usize, field: &str, reason: &str| {
            Err(QueueSettingsError {
                field: format!("queues[{i}].{field}"),
                reason: reason.to_owned(),
            })
        };
        for (i, q) in all.iter().enumerate() {
            if crate::Queues::validate_queue(&q.name).is_err() {
                return err(i, "name", "must be 1–128 characters of A-Z a-z 0-9 - _ . :");
            }
            if all[..i].iter().any(|other| other.name == q.name) {
                return err(i, "name", "is declared twice");
            }
            if q.concurrency == Some(0) {
                return err(
                    i,
                    "concurrency",
                    "must be at least 1 (leave it out for no cap)",
                );
            }
            if q.attempts == Some(0) {
                return err(i, "attempts", "must be at least 1");
            }
            if let Some(deliver) = &q.deliver {
                deliver.validate(&format!("queues[{i}]"))?;
            }
            if let Some(backoff) = &q.backoff
                && let Err(e) = backoff
                    .to_backoff()
                    .validate(&format!("queues[{i}].backoff"))
            {
                let (field, reason) = match e {
                    crate::QueueError::Invalid { field, detail } => (field, detail),
                    other => (format!("queues[{i}].backoff"), other.to_string()),
                };
                return Err(QueueSettingsError { field, reason });
            }
            for (field, rate) in [
                ("rate_limit", q.rate_limit),
                ("group_rate_limit", q.group_rate_limit),
            ] {
                let Some(rate) = rate else { continue };
                if rate.max == 0 {
                    return err(i, &format!("{field}.max"), "must be at least 1");
                }
                if rate.per.get().is_zero() {
                    return err(i, &format!("{field}.per"), "must be longer than 0");
                }
            }
        }
        Ok(())
    }
}

/// A problem in a `[[queues]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct QueueSettingsError {
    /// The key path, e.g. `queues[2].rate_limit.per`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use keel_core::HumanDuration;

    use super::*;

    fn field_of(all: &[QueueSettings]) -> String {
        QueueSettings::validate_all(all).unwrap_err().field
    }

    #[test]
    fn queue_declarations_name_the_bad_field() {
        let ok = QueueSettings {
            name: "mail".into(),
            ..QueueSettings::default()
        };
        assert!(QueueSettings::validate_all(std::slice::from_ref(&ok)).is_ok());
        let bad_name = QueueSettings {
            name: "no spaces".into(),
            ..ok.clone()
        };
        assert_eq!(field_of(&[ok.clone(), bad_name]), "queues[1].name");
        assert_eq!(field_of(&[ok.clone(), ok.clone()]), "queues[1].name");
        let zero_rate = QueueSettings {
            group_rate_limit: Some(RateLimit {
                max: 5,
                per: HumanDuration::from_secs(0),
            }),
            ..ok.clone()
        };
        assert_eq!(field_of(&[zero_rate]), "queues[0].group_rate_limit.per");
        let no_cap = QueueSettings {
            concurrency: Some(0),
            ..ok
        };
        assert_eq!(
            field_of(std::slice::from_ref(&no_cap)),
            "queues[0].concurrency"
        );
        let https = QueueSettings {
            concurrency: None,
            deliver: Some(DeliverSettings::to("https://app.example.com/jobs")),
            ..no_cap.clone()
        };
        assert_eq!(field_of(&[https]), "queues[0].deliver.url");
        let mut bad_header = DeliverSettings::to("http://127.0.0.1:3000/jobs");
        bad_header
            .headers
            .insert("bad header".into(), Secret::new("x"));
        let bad_header = QueueSettings {
            concurrency: None,
            deliver: Some(bad_header),
            ..no_cap
        };
        assert_eq!(field_of(&[bad_header]), "queues[0].deliver.headers");
        let jittery = QueueSettings {
            name: "q".into(),
            backoff: Some(BackoffSettings {
                kind: BackoffKind::Fixed,
                delay: HumanDuration::from_secs(1),
                max_delay: None,
                jitter: 2.0,
            }),
            ..QueueSettings::default()
        };
        assert_eq!(field_of(&[jittery]), "queues[0].backoff.jitter");
    }

    #[test]
    fn a_queue_keeps_its_own_retention_over_the_default() {
        let default = QueueConfig::default().retention();
        let plain = QueueSettings {
            name: "q".into(),
            ..QueueSettings::default()
        };
        assert_eq!(plain.retention(default), None);
        let audit = QueueSettings {
            keep_completed: Some(50_000),
            keep_for: Some(HumanDuration::from_secs(86_400)),
            ..plain
        };
        let own = audit.retention(default).unwrap();
        assert_eq!((own.completed, own.failed), (50_000, default.failed));
        assert_eq!(own.max_age, Some(std::time::Duration::from_secs(86_400)));
    }
}
