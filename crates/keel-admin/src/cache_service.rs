//! The cache behind `/api/v1/cache`: the memory engine alone, or the memory engine in front of
//! Redis (shared by every instance). Handlers call this one type either way.

use bytes::Bytes;
use keel_cache::{Cache, CacheError, CacheValue, Glob, KeyPage, SetOptions, SetOutcome};
use keel_redis::TieredCache;
use serde_json::Value;

/// Keys examined per batch of an in-memory pattern delete; the handler yields between batches.
const DELETE_BATCH: usize = 1000;

/// The cache the API serves. Cheap to clone.
#[derive(Clone)]
pub enum CacheService {
    /// Memory only: this instance's own cache.
    Memory(Cache),
    /// Memory in front of Redis.
    Tiered(TieredCache),
}

impl CacheService {
    /// The memory tier (the whole cache without Redis).
    pub fn memory(&self) -> &Cache {
        match self {
            Self::Memory(cache) => cache,
            Self::Tiered(tiered) => tiered.l1(),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Option<CacheValue> {
        match self {
            Self::Memory(cache) => cache.get(key),
            Self::Tiered(tiered) => tiered.get(key).await,
        }
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> Vec<Option<CacheValue>> {
        match self {
            Self::Memory(cache) => cache.get_many(keys),
            Self::Tiered(tiered) => tiered.get_many(keys).await,
        }
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> Result<SetOutcome, CacheError> {
        match self {
            Self::Memory(cache) => cache.set(key, value, options),
            Self::Tiered(tiered) => tiered.set(key, value, options).await,
        }
    }

    pub(crate) async fn set_many(
        &self,
        entries: Vec<(String, Bytes, SetOptions)>,
    ) -> Result<Vec<SetOutcome>, CacheError> {
        match self {
            Self::Memory(cache) => cache.set_many(entries),
            Self::Tiered(tiered) => tiered.set_many(entries).await,
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> bool {
        match self {
            Self::Memory(cache) => cache.delete(key),
            Self::Tiered(tiered) => tiered.delete(key).await,
        }
    }

    /// One page of keys matching `pattern`.
    pub(crate) async fn scan(&self, pattern: &Glob, cursor: Option<&str>, limit: usize) -> KeyPage {
        match self {
            Self::Memory(cache) => cache.scan(pattern, cursor, limit),
            Self::Tiered(tiered) => tiered.scan(pattern, cursor, limit).await,
        }
    }

    /// Deletes every key matching `pattern`.
    pub(crate) async fn delete_matching(&self, pattern: &Glob) -> usize {
        match self {
            Self::Memory(cache) => {
                let mut deleted = 0;
                let mut cursor: Option<String> = None;
                loop {
                    let (n, next) = cache.delete_matching(pattern, cursor.as_deref(), DELETE_BATCH);
                    deleted += n;
                    match next {
                        Some(c) => cursor = Some(c),
                        None => return deleted,
                    }
                    tokio::task::yield_now().await;
                }
            }
            Self::Tiered(tiered) => tiered.delete_matching(pattern).await,
        }
    }

    pub(crate) async fn invalidate_tag(&self, tag: &str) -> usize {
        match self {
            Self::Memory(cache) => cache.invalidate_tag(tag),
            Self::Tiered(tiered) => tiered.invalidate_tag(tag).await,
        }
    }

    pub(crate) async fn reset(&self) -> usize {
        match self {
            Self::Memory(cache) => cache.reset(),
            Self::Tiered(tiered) => tiered.reset().await,
        }
    }

    /// This instance's statistics: the memory tier's, and with Redis the totals over both
    /// tiers in `hits`, `misses` and `hit_ratio`, plus `l2` and `invalidation`.
    pub fn stats(&self) -> Value {
        match self {
            Self::Memory(cache) => serde_json::to_value(cache.stats()).unwrap_or_default(),
            Self::Tiered(tiered) => {
                let s = tiered.stats();
                let mut v = serde_json::to_value(&s.l1).unwrap_or_default();
                if let Value::Object(map) = &mut v {
                    map.insert("hits".into(), s.hits.into());
                    map.insert("misses".into(), s.misses.into());
                    map.insert("hit_ratio".into(), s.hit_ratio.into());
                    map.insert("l1_hits".into(), s.l1.hits.into());
                    map.insert("l2".into(), serde_json::to_value(s.l2).unwrap_or_default());
                    map.insert(
                        "invalidation".into(),
                        serde_json::to_value(s.invalidation).unwrap_or_default(),
                    );
                }
                v
            }
        }
    }
}
