//! The `[cache]` config section.

use keel_core::{ByteSize, HumanDuration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The in-memory cache tier.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Memory the cache may hold: keys, stored values and per-entry metadata. The least valuable
    /// entries (TinyLFU) are evicted beyond it.
    pub max_memory: ByteSize,
    /// Optional bound on the number of entries (0 = none).
    pub max_entries: u64,
    /// TTL of entries set without one; "0" = entries never expire.
    pub default_ttl: HumanDuration,
    /// Values at least this large are compressed (LZ4) when that saves space.
    pub compress_min_bytes: ByteSize,
    /// Largest value accepted; larger writes are refused (413 over HTTP).
    pub max_value_size: ByteSize,
    /// With Redis: how long a value read from Redis stays in memory at most (a write on
    /// another instance removes it at once; this bounds how long a missed removal can last).
    pub l1_max_ttl: HumanDuration,
    /// With Redis: how long memory copies keep being served after the invalidation
    /// subscription is lost; past it, reads go to Redis until it is back.
    pub l1_staleness: HumanDuration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_memory: ByteSize::mib(256),
            max_entries: 0,
            default_ttl: HumanDuration::from_secs(300),
            compress_min_bytes: ByteSize(1024),
            max_value_size: ByteSize::mib(8),
            l1_max_ttl: HumanDuration::from_secs(60),
            l1_staleness: HumanDuration::from_millis(100),
        }
    }
}

/// A problem in the `[cache]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CacheConfigError {
    /// The key path, e.g. `cache.max_memory`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl CacheConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        let err = |field, reason: &str| {
            Err(CacheConfigError {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.max_memory.bytes() < 1024 * 1024 {
            return err("cache.max_memory", "must be at least 1MiB");
        }
        if self.max_value_size.bytes() == 0 || self.max_value_size.bytes() > u64::from(u32::MAX / 2)
        {
            return err("cache.max_value_size", "must be between 1 byte and 2GiB");
        }
        if self.max_value_size.bytes() > self.max_memory.bytes() {
            return err("cache.max_value_size", "must not exceed cache.max_memory");
        }
        if self.max_entries > 0 && self.max_memory.bytes() / self.max_entries < 64 {
            return err(
                "cache.max_entries",
                "leaves under 64 bytes per entry; raise cache.max_memory or lower max_entries",
            );
        }
        if self.l1_max_ttl.get().is_zero() {
            return err("cache.l1_max_ttl", "must be greater than 0");
        }
        if self.l1_staleness.get().is_zero() {
            return err("cache.l1_staleness", "must be greater than 0");
        }
        Ok(())
    }
}
