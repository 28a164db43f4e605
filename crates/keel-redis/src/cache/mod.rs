//! The cache in two tiers: keel's memory engine ([`Cache`], L1) in front of Redis (L2), shared
//! by every instance.
//!
//! - **Reads** try L1, then L2; an L2 hit fills L1 for at most `cache.l1_max_ttl` (never longer
//!   than the entry has left).
//! - **Writes** go to L2, then L1. Writes, deletes, pattern deletes, tag invalidations and
//!   resets are then **broadcast** over Redis pub/sub, and every other instance drops what it
//!   holds in L1 for them (see [`listener`]). Pub/sub rather than RESP3 client tracking:
//!   tracking reports keys, so a pattern or tag invalidation of many keys would arrive as that
//!   many messages (and tracking needs RESP3 on every connection); one message per operation
//!   covers patterns, tags and resets alike.
//! - An L2 read or write that an invalidation of its key overtook (one arrived while it was in
//!   flight) leaves nothing in L1, so a late read cannot bring back a value that was just
//!   invalidated, nor a write one that another instance replaced (see `epochs`).
//! - **While Redis cannot be reached** (down, too slow, or its breaker open), reads are served
//!   from L1 (an L2 miss), writes go to L1 only, and nothing fails. When the subscription comes
//!   back, the instance empties its L1 — it may have missed invalidations — and resumes L2.
//! - **While only the subscription is lost** and Redis answers, L1 is not trusted for longer
//!   than `cache.l1_staleness`: reads go to L2 until the subscription is back.

mod epochs;
mod keys;
mod listener;
mod scripts;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_cache::{
    Cache, CacheError, CacheStats, CacheValue, Glob, KeyInfo, KeyPage, SetOptions, SetOutcome,
};
use keel_core::Clock;
use keel_core::sync::lock;
use serde::Serialize;

use self::epochs::{Epoch, Epochs};
use self::keys::Layout;
use crate::{Redis, RedisError};

/// Keys one SCAN call asks for, and deletes sent in one pipeline.
const BATCH: usize = 500;
/// How often each instance publishes its statistics for `scope=cluster`, and how long they
/// are kept after the instance stops.
const STATS_EVERY: Duration = Duration::from_secs(2);
const STATS_KEPT_MS: u64 = 10_000;

/// The two-tier cache. Cheap to clone; clones share everything.
///
/// ```no_run
/// use std::time::Duration;
/// use keel_cache::{Cache, CacheConfig, SetOptions};
/// use keel_core::{Clock, Secret};
/// use keel_redis::{Redis, RedisOptions, TieredCache};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = Redis::connect(&RedisOptions::new(Secret::new("redis://127.0.0.1:6379/0")), Clock::system())?;
/// let cache = TieredCache::start(Cache::new(CacheConfig::default()), redis, Clock::system());
/// cache.set("user:1", "ada".into(), SetOptions::ttl(Duration::from_secs(600))).await?;
/// // On any instance sharing the Redis:
/// assert_eq!(cache.get("user:1").await.unwrap().bytes, "ada");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TieredCache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) l1: Cache,
    pub(crate) redis: Redis,
    clock: Clock,
    l1_max_ttl: Duration,
    l1_staleness: Duration,
    /// This instance's id: its own broadcasts come back to it and are skipped.
    pub(crate) instance: String,
    pub(crate) channel: String,
    keys: Layout,
    pub(crate) counters: Counters,
    /// Bumped by every invalidation received; an L2 read during which it moved does not fill L1.
    pub(crate) epochs: Epochs,
    /// Whether invalidations are being received: read by every read, so an atomic.
    pub(crate) subscribed: AtomicBool,
    /// Since when they are not (`None` while subscribed).
    pub(crate) lost_since: Mutex<Option<Instant>>,
}

#[derive(Default)]
pub(crate) struct Counters {
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    l2_errors: AtomicU64,
    l2_writes: AtomicU64,
    l2_write_errors: AtomicU64,
    published: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) l1_flushes: AtomicU64,
}

/// Statistics of both tiers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TierStats {
    /// Reads answered: from L1 or from L2.
    pub hits: u64,
    /// Reads that found the key in neither tier (or L2 could not be asked).
    pub misses: u64,
    /// hits / (hits + misses).
    pub hit_ratio: f64,
    /// The memory tier's own statistics (its misses include reads then answered by L2).
    pub l1: CacheStats,
    /// The Redis tier.
    pub l2: L2Stats,
    /// The invalidation broadcast.
    pub invalidation: InvalidationStats,
}

/// What the Redis tier did for this instance.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct L2Stats {
    /// L1 misses found in Redis.
    pub hits: u64,
    /// L1 misses not in Redis either.
    pub misses: u64,
    /// Reads Redis could not answer (counted as misses).
    pub errors: u64,
    /// Writes stored in Redis.
    pub writes: u64,
    /// Writes Redis could not take (kept in L1 only).
    pub write_errors: u64,
}

/// What the invalidation broadcast did for this instance.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct InvalidationStats {
    /// Whether this instance receives invalidations now.
    pub subscribed: bool,
    /// Invalidations this instance sent.
    pub published: u64,
    /// Invalidations from other instances applied to L1.
    pub received: u64,
    /// Times L1 was emptied because invalidations may have been missed.
    pub l1_flushes: u64,
}

/// An entry as the GET script returns it: value, content type, tags, PTTL.
type L2Entry = (Vec<u8>, String, String, i64);

/// How a set's TTL applies in each tier.
struct Ttls {
    /// In Redis (`None`: never expires).
    l2: Option<Duration>,
    /// In L1: never longer than `l1_max_ttl`.
    l1: Duration,
}

impl TieredCache {
    /// Puts `l1` in front of Redis, subscribes to invalidations and starts publishing this
    /// instance's statistics. Call within a Tokio runtime; the background task ends when the
    /// last clone is dropped.
    pub fn start(l1: Cache, redis: Redis, clock: Clock) -> Self {
        let config = l1.config().clone();
        let inner = Arc::new(Inner {
            channel: redis.key("cache:invalidate"),
            keys: Layout::new(redis.key("cache:v:"), redis.key("cache:t:")),
            l1,
            redis,
            l1_max_ttl: config.l1_max_ttl.get(),
            l1_staleness: config.l1_staleness.get(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            counters: Counters::default(),
            epochs: Epochs::default(),
            subscribed: AtomicBool::new(false),
            lost_since: Mutex::new(Some(clock.now())),
            clock,
        });
        tokio::spawn(listener::run(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// The memory tier.
    pub fn l1(&self) -> &Cache {
        &self.inner.l1
    }

    /// The memory tier, when it may answer reads on its own: while invalidations are received
    /// (or were lost less than `cache.l1_staleness` ago).
    pub fn trusted_l1(&self) -> Option<&Cache> {
        self.l1_trusted().then_some(&self.inner.l1)
    }

    fn l1_trusted(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
            || lock(&self.inner.lost_since).is_some_and(|since| {
                self.inner.clock.now().saturating_duration_since(since) < self.inner.l1_staleness
            })
    }

    fn entry_key(&self, key: &str) -> String {
        self.inner.keys.entry(key)
    }

    /// Reads `key`: from L1, else from Redis (filling L1).
    pub async fn get(&self, key: &str) -> Option<CacheValue> {
        let inner = &*self.inner;
        let trusted = self.l1_trusted();
        if trusted && let Some(value) = inner.l1.get(key) {
            return Some(value);
        }
        let epoch = inner.epochs.of(key);
        let found: Result<Option<L2Entry>, _> = inner
            .redis
            .script(&scripts::GET.key(self.entry_key(key)))
            .await;
        let c = &inner.counters;
        match found {
            Ok(Some((value, content_type, tags, pttl))) => {
                c.l2_hits.fetch_add(1, Ordering::Relaxed);
                let left = u64::try_from(pttl).ok().map(Duration::from_millis);
                let options = SetOptions {
                    ttl: Some(left.map_or(inner.l1_max_ttl, |l| l.min(inner.l1_max_ttl))),
                    content_type: (!content_type.is_empty()).then_some(content_type),
                    tags: split_tags(&tags),
                    uncompressed: false,
                };
                let value = Bytes::from(value);
                // An invalidation that arrived meanwhile may concern this key: do not keep it.
                if inner.epochs.of(key) == epoch
                    && let Ok(stored) = inner.l1.fill(key, value.clone(), options.clone())
                {
                    self.drop_if_overtaken(key, epoch);
                    return Some(stored);
                }
                Some(inner.l1.detached(value, options))
            }
            Ok(None) => {
                c.l2_misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => {
                c.l2_errors.fetch_add(1, Ordering::Relaxed);
                // L1 was skipped as untrusted; with Redis gone it is all there is.
                if trusted { None } else { inner.l1.get(key) }
            }
        }
    }

    /// Reads many keys; `None` for each miss.
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<CacheValue>> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await);
        }
        values
    }

    fn ttls(&self, options: &SetOptions) -> Ttls {
        let ttl = options
            .ttl
            .unwrap_or_else(|| self.inner.l1.config().default_ttl.get());
        let l2 = (!ttl.is_zero()).then_some(ttl);
        Ttls {
            l2,
            l1: l2.map_or(self.inner.l1_max_ttl, |t| t.min(self.inner.l1_max_ttl)),
        }
    }

    /// Stores `value` under `key` in both tiers and tells the other instances.
    pub async fn set(
        &self,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> Result<SetOutcome, CacheError> {
        self.inner.l1.validate(key, value.len(), &options)?;
        Ok(self.store(key, value, options).await)
    }

    /// Stores every entry, or none: all are validated first.
    pub async fn set_many(
        &self,
        entries: Vec<(String, Bytes, SetOptions)>,
    ) -> Result<Vec<SetOutcome>, CacheError> {
        for (index, (key, value, options)) in entries.iter().enumerate() {
            self.inner
                .l1
                .validate(key, value.len(), options)
                .map_err(|e| CacheError::InBatch {
                    index,
                    source: Box::new(e),
                })?;
        }
        let mut outcomes = Vec::with_capacity(entries.len());
        for (key, value, options) in entries {
            outcomes.push(self.store(&key, value, options).await);
        }
        Ok(outcomes)
    }

    /// Drops `key` from L1 if an invalidation arrived since `epoch`: one that raced a fill or
    /// a write between Redis and L1 (it may have removed the key just before this instance put
    /// an older value there). The next read fetches it from Redis again.
    fn drop_if_overtaken(&self, key: &str, epoch: Epoch) {
        if self.inner.epochs.of(key) != epoch {
            self.inner.l1.delete(key);
        }
    }

    async fn store(&self, key: &str, value: Bytes, options: SetOptions) -> SetOutcome {
        let inner = &*self.inner;
        let epoch = inner.epochs.of(key);
        let ttls = self.ttls(&options);
        let mut tags = options.tags.clone();
        tags.sort();
        tags.dedup();
        let entry = self.entry_key(key);
        let tag_prefix = inner.keys.tag_prefix_of(&entry);
        let mut script = scripts::SET.key(&entry);
        for tag in &tags {
            script.key(format!("{tag_prefix}{tag}"));
        }
        script
            .arg(value.as_ref())
            .arg(options.content_type.as_deref().unwrap_or(""))
            .arg(ttls.l2.map_or(0, millis))
            .arg(&tag_prefix)
            .arg(tags.join(","));
        let stored: Result<i64, _> = inner.redis.script(&script).await;
        let l1_options = SetOptions {
            ttl: Some(ttls.l1),
            ..options
        };
        // Validated by the caller.
        let l1_outcome = inner
            .l1
            .set(key, value, l1_options)
            .unwrap_or(SetOutcome::Created);
        match stored {
            Ok(replaced) => {
                // Another instance's write of the key may have landed in Redis after ours.
                self.drop_if_overtaken(key, epoch);
                inner.counters.l2_writes.fetch_add(1, Ordering::Relaxed);
                self.publish(Op::Key, key).await;
                if replaced == 1 {
                    SetOutcome::Replaced
                } else {
                    SetOutcome::Created
                }
            }
            Err(e) => {
                inner
                    .counters
                    .l2_write_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "cache write kept in memory only");
                l1_outcome
            }
        }
    }

    /// Deletes `key` from both tiers and tells the other instances. Returns whether a live
    /// entry was removed.
    pub async fn delete(&self, key: &str) -> bool {
        let inner = &*self.inner;
        let entry = self.entry_key(key);
        let deleted: Result<i64, _> = inner
            .redis
            .script(
                scripts::DELETE
                    .key(&entry)
                    .arg(inner.keys.tag_prefix_of(&entry))
                    .arg(""),
            )
            .await;
        let in_l1 = inner.l1.delete(key);
        match deleted {
            Ok(n) => {
                self.publish(Op::Key, key).await;
                n == 1 || in_l1
            }
            Err(_) => in_l1,
        }
    }

    /// Deletes every key matching `pattern` from both tiers (Redis in SCAN batches, never
    /// `KEYS`) and tells the other instances. Returns how many were removed.
    pub async fn delete_matching(&self, pattern: &Glob) -> usize {
        let in_l1 = self.inner.l1.delete_all_matching(pattern);
        match self.delete_matching_l2(pattern.as_str()).await {
            Ok(n) => {
                self.publish(Op::Pattern, pattern.as_str()).await;
                n.max(in_l1)
            }
            Err(_) => in_l1,
        }
    }

    async fn delete_matching_l2(&self, pattern: &str) -> Result<usize, RedisError> {
        let inner = &*self.inner;
        let matcher = inner.keys.matcher(pattern);
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys) = inner.redis.scan(cursor, &matcher, BATCH).await?;
            deleted += self.delete_l2_entries(&keys, "").await?;
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Deletes entries by their Redis keys in one pipeline (those carrying `tag`, if not
    /// empty). Returns how many were deleted.
    async fn delete_l2_entries(&self, keys: &[String], tag: &str) -> Result<usize, RedisError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let inner = &*self.inner;
        let mut pipe = crate::pipe();
        for key in keys {
            pipe.cmd("EVALSHA")
                .arg(scripts::DELETE.get_hash())
                .arg(1)
                .arg(key)
                .arg(inner.keys.tag_prefix_of(key))
                .arg(tag);
        }
        let results: Vec<i64> = inner
            .redis
            .pipeline_loading(
                &pipe,
                inner.redis.command_timeout(),
                std::slice::from_ref(&scripts::DELETE_LOAD),
            )
            .await?;
        Ok(results.iter().filter(|n| **n == 1).count())
    }

    /// Removes every entry carrying `tag` from both tiers and tells the other instances.
    /// Returns how many were removed.
    pub async fn invalidate_tag(&self, tag: &str) -> usize {
        let in_l1 = self.inner.l1.invalidate_tag(tag);
        match self.invalidate_tag_l2(tag).await {
            Ok(n) => {
                self.publish(Op::Tag, tag).await;
                n.max(in_l1)
            }
            Err(_) => in_l1,
        }
    }

    async fn invalidate_tag_l2(&self, tag: &str) -> Result<usize, RedisError> {
        let mut sets = self.inner.keys.tag_sets(tag);
        let mut deleted = 0;
        // Each round takes up to a batch from every group's set still holding entries.
        while !sets.is_empty() {
            let mut pipe = crate::pipe();
            for set in &sets {
                pipe.cmd("SPOP").arg(set).arg(BATCH);
            }
            let popped: Vec<Vec<String>> = self.inner.redis.pipeline(&pipe).await?;
            let members: Vec<String> = popped.iter().flatten().cloned().collect();
            deleted += self.delete_l2_entries(&members, tag).await?;
            // A set that gave less than a batch is empty now.
            sets = sets
                .into_iter()
                .zip(&popped)
                .filter(|(_, p)| p.len() >= BATCH)
                .map(|(set, _)| set)
                .collect();
        }
        Ok(deleted)
    }

    /// Empties both tiers (every keel key of the cache in Redis) and tells the other
    /// instances. Returns how many entries L1 held.
    pub async fn reset(&self) -> usize {
        let in_l1 = self.inner.l1.reset();
        let inner = &*self.inner;
        let matcher = format!("{}*", Glob::escape(&inner.redis.key("cache:")));
        let cleared = async {
            let mut cursor = 0u64;
            loop {
                let (next, keys) = inner.redis.scan(cursor, &matcher, BATCH).await?;
                // Statistics of live instances are rewritten within seconds; the rest goes.
                let keys: Vec<&String> = keys
                    .iter()
                    .filter(|k| !k.starts_with(&inner.redis.key("cache:stats:")))
                    .collect();
                if !keys.is_empty() {
                    let _: i64 = inner.redis.query(redis::cmd("UNLINK").arg(keys)).await?;
                }
                if next == 0 {
                    return Ok::<_, RedisError>(());
                }
                cursor = next;
            }
        };
        if cleared.await.is_ok() {
            self.publish(Op::Reset, "").await;
        }
        in_l1
    }

    /// Lists keys matching `pattern` from Redis (SCAN: a key present throughout the paging is
    /// listed at least once; Redis may list one twice), or from L1 while Redis cannot be asked.
    /// Cursors say which tier they page: `r:<n>` for Redis.
    pub async fn scan(&self, pattern: &Glob, cursor: Option<&str>, limit: usize) -> KeyPage {
        let l2_cursor = match cursor {
            None => Some(0),
            Some(c) => c.strip_prefix("r:").and_then(|n| n.parse::<u64>().ok()),
        };
        if let Some(start) = l2_cursor
            && let Ok(page) = self.scan_l2(pattern.as_str(), start, limit).await
        {
            return page;
        }
        let l1_cursor = cursor.filter(|c| !c.starts_with("r:"));
        self.inner.l1.scan(pattern, l1_cursor, limit)
    }

    async fn scan_l2(
        &self,
        pattern: &str,
        start: u64,
        limit: usize,
    ) -> Result<KeyPage, RedisError> {
        let inner = &*self.inner;
        let matcher = inner.keys.matcher(pattern);
        let mut cursor = start;
        let mut found: Vec<String> = Vec::new();
        // SCAN may answer empty pages; a few rounds fill one.
        for _ in 0..16 {
            let (next, keys) = inner.redis.scan(cursor, &matcher, limit.max(10)).await?;
            found.extend(keys);
            cursor = next;
            if cursor == 0 || found.len() >= limit {
                break;
            }
        }
        let mut pipe = crate::pipe();
        for key in &found {
            pipe.cmd("HSTRLEN").arg(key).arg("v").cmd("PTTL").arg(key);
        }
        let sizes: Vec<i64> = if found.is_empty() {
            Vec::new()
        } else {
            inner.redis.pipeline(&pipe).await?
        };
        let keys = found
            .iter()
            .zip(sizes.chunks(2))
            .filter(|(_, s)| s[1] != -2)
            .map(|(key, s)| {
                let name = inner.keys.name_of(key);
                KeyInfo {
                    key: Arc::from(name),
                    size: s[0].max(0) as usize,
                    stored_size: name.len() + s[0].max(0) as usize,
                    ttl_remaining: u64::try_from(s[1]).ok().map(Duration::from_millis),
                }
            })
            .collect();
        Ok(KeyPage {
            keys,
            next_cursor: (cursor != 0).then(|| format!("r:{cursor}")),
        })
    }

    async fn publish(&self, op: Op, arg: &str) {
        let message = format!("{} {} {arg}", self.inner.instance, op.code());
        let sent: Result<i64, _> = self
            .inner
            .redis
            .query(redis::cmd("PUBLISH").arg(&self.inner.channel).arg(message))
            .await;
        if sent.is_ok() {
            self.inner
                .counters
                .published
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A handle that tells the other instances to drop memory-tier entries this instance
    /// removed itself, without Redis holding them: for users of the memory tier that keep
    /// entries only there (the gateway's cached responses).
    pub fn broadcaster(&self) -> Broadcaster {
        Broadcaster {
            cache: self.clone(),
        }
    }

    /// This instance's statistics.
    pub fn stats(&self) -> TierStats {
        self.inner.stats()
    }

    /// Every live instance's statistics, summed (each publishes its own every two seconds).
    pub async fn cluster_stats(&self) -> Result<ClusterStats, RedisError> {
        let inner = &*self.inner;
        self.inner.publish_stats().await?;
        let matcher = format!("{}*", Glob::escape(&inner.redis.key("cache:stats:")));
        let mut cursor = 0u64;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, page) = inner.redis.scan(cursor, &matcher, BATCH).await?;
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let values: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            inner.redis.query(redis::cmd("MGET").arg(&keys)).await?
        };
        let mut total = ClusterStats::default();
        for stats in values
            .iter()
            .flatten()
            .filter_map(|v| serde_json::from_str::<TierStats>(v).ok())
        {
            total.add(&stats);
        }
        total.hit_ratio = ratio(total.hits, total.misses);
        Ok(total)
    }
}

/// What other instances should drop from their memory tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// One key.
    Key(String),
    /// Every key matching a glob.
    Pattern(String),
    /// Every entry carrying a tag.
    Tag(String),
}

/// Tells the other instances to drop memory-tier entries (see [`TieredCache::broadcaster`]).
/// Cheap to clone.
#[derive(Clone)]
pub struct Broadcaster {
    cache: TieredCache,
}

impl Broadcaster {
    /// Sends `what` to the other instances in the background (a purge must not wait on Redis;
    /// while Redis is away the message is lost, and the other instances empty their memory
    /// tier when they resubscribe).
    pub fn send(&self, what: Invalidation) {
        let cache = self.cache.clone();
        tokio::spawn(async move {
            match what {
                Invalidation::Key(key) => cache.publish(Op::Key, &key).await,
                Invalidation::Pattern(pattern) => cache.publish(Op::Pattern, &pattern).await,
                Invalidation::Tag(tag) => cache.publish(Op::Tag, &tag).await,
            }
        });
    }
}

/// Statistics summed over every live instance.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ClusterStats {
    /// Instances that published statistics in the last ten seconds.
    pub instances: u64,
    /// Reads answered from either tier.
    pub hits: u64,
    /// Reads answered by neither.
    pub misses: u64,
    /// hits / (hits + misses).
    pub hit_ratio: f64,
    /// Writes.
    pub sets: u64,
    /// Entries in the instances' memory tiers.
    pub l1_entries: u64,
    /// Bytes those entries are charged.
    pub l1_stored_bytes: u64,
    /// The Redis tier, summed.
    pub l2: L2Stats,
}

impl ClusterStats {
    fn add(&mut self, s: &TierStats) {
        self.instances += 1;
        self.hits += s.hits;
        self.misses += s.misses;
        self.sets += s.l1.sets;
        self.l1_entries += s.l1.entries;
        self.l1_stored_bytes += s.l1.stored_bytes;
        self.l2.hits += s.l2.hits;
        self.l2.misses += s.l2.misses;
        self.l2.errors += s.l2.errors;
        self.l2.writes += s.l2.writes;
        self.l2.write_errors += s.l2.write_errors;
    }
}

impl Inner {
    fn stats(&self) -> TierStats {
        let c = &self.counters;
        let l1 = self.l1.stats();
        let l2 = L2Stats {
            hits: c.l2_hits.load(Ordering::Relaxed),
            misses: c.l2_misses.load(Ordering::Relaxed),
            errors: c.l2_errors.load(Ordering::Relaxed),
            writes: c.l2_writes.load(Ordering::Relaxed),
            write_errors: c.l2_write_errors.load(Ordering::Relaxed),
        };
        let hits = l1.hits + l2.hits;
        let misses = l2.misses + l2.errors;
        TierStats {
            hits,
            misses,
            hit_ratio: ratio(hits, misses),
            l1,
            l2,
            invalidation: InvalidationStats {
                subscribed: self.subscribed.load(Ordering::Acquire),
                published: c.published.load(Ordering::Relaxed),
                received: c.received.load(Ordering::Relaxed),
                l1_flushes: c.l1_flushes.load(Ordering::Relaxed),
            },
        }
    }

    /// Writes this instance's statistics where `cluster_stats` finds them.
    pub(crate) async fn publish_stats(&self) -> Result<(), RedisError> {
        let json = serde_json::to_string(&self.stats()).unwrap_or_default();
        let key = self.redis.key(&format!("cache:stats:{}", self.instance));
        self.redis
            .query::<()>(
                redis::cmd("SET")
                    .arg(key)
                    .arg(json)
                    .arg("PX")
                    .arg(STATS_KEPT_MS),
            )
            .await
    }
}

/// What a broadcast says to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Key,
    Pattern,
    Tag,
    Reset,
}

impl Op {
    fn code(self) -> char {
        match self {
            Op::Key => 'k',
            Op::Pattern => 'p',
            Op::Tag => 't',
            Op::Reset => 'r',
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "k" => Op::Key,
            "p" => Op::Pattern,
            "t" => Op::Tag,
            "r" => Op::Reset,
            _ => return None,
        })
    }
}

fn split_tags(tags: &str) -> Vec<String> {
    tags.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_codes_round_trip() {
        for op in [Op::Key, Op::Pattern, Op::Tag, Op::Reset] {
            assert_eq!(Op::from_code(&op.code().to_string()), Some(op));
        }
        assert_eq!(Op::from_code("x"), None);
    }
}
