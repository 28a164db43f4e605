//! The cache engine.

use keel_core::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_core::Clock;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache as Moka;

use crate::config::CacheConfig;
use crate::entry::{Entry, Meta, content_hash, maybe_compress};
use crate::error::{CacheError, validate_key, validate_tag};
use crate::glob::Glob;
use crate::index::{IndexEntry, KeyIndex, NEVER};
use crate::stats::{CacheStats, Counters};

/// How to store a value.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// Time to live: `None` = `cache.default_ttl`; `Some(Duration::ZERO)` = never expires.
    pub ttl: Option<Duration>,
    /// The content type to return with the value.
    pub content_type: Option<String>,
    /// Tags to invalidate the entry by.
    pub tags: Vec<String>,
}

impl SetOptions {
    /// Options with the given TTL.
    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            ..Self::default()
        }
    }
}

/// Whether a set created a new entry or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// No live entry had the key.
    Created,
    /// A live entry was replaced.
    Replaced,
}

/// A value read from the cache.
#[derive(Debug, Clone)]
pub struct CacheValue {
    /// The value as it was stored.
    pub bytes: Bytes,
    /// Time left before it expires (`None` = never).
    pub ttl_remaining: Option<Duration>,
    /// A hash of the value, a strong validator; [`CacheValue::etag_hex`] formats it.
    pub etag: u64,
    meta: Option<Arc<Meta>>,
}

impl CacheValue {
    /// The content type given when the value was stored.
    pub fn content_type(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.content_type.as_deref())
    }

    /// The value's tags.
    pub fn tags(&self) -> &[Arc<str>] {
        self.meta.as_ref().map_or(&[], |m| &m.tags)
    }

    /// The ETag as 16 hex digits (without quotes).
    pub fn etag_hex(&self) -> String {
        format!("{:016x}", self.etag)
    }
}

/// A key in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    /// The key.
    pub key: Arc<str>,
    /// The value's size before compression.
    pub size: usize,
    /// Bytes it is charged (key, stored value, metadata).
    pub stored_size: usize,
    /// Time left before it expires (`None` = never).
    pub ttl_remaining: Option<Duration>,
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPage {
    /// Matching live keys, in key order.
    pub keys: Vec<KeyInfo>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next_cursor: Option<String>,
}

/// tag → key → generation of the write that carried the tag.
pub(crate) type TagIndex = HashMap<Arc<str>, HashMap<Arc<str>, u64>>;

/// State the eviction listener shares with the cache.
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    /// Every key, ordered, with its latest write's generation and expiry.
    pub(crate) keys: KeyIndex,
    /// tag → key → generation.
    pub(crate) tags: Mutex<TagIndex>,
}

/// An in-memory cache bounded by bytes, with TTLs, tags, glob patterns, single-flight loading,
/// compression and statistics. Cheap to clone; clones share the same entries.
///
/// ```
/// use std::time::Duration;
/// use keel_cache::{Cache, CacheConfig, SetOptions};
///
/// let cache = Cache::new(CacheConfig::default());
/// cache.set("user:1", "ada".into(), SetOptions::ttl(Duration::from_secs(60))).unwrap();
/// assert_eq!(cache.get("user:1").unwrap().bytes, "ada");
/// ```
#[derive(Clone)]
pub struct Cache {
    // One Arc around everything: handlers clone the cache per request, and cloning moka's
    // handle alone touches several shared counters.
    pub(crate) inner: Arc<Inner>,
}

/// What a [`Cache`] handle shares with its clones.
pub(crate) struct Inner {
    pub(crate) store: Moka<Arc<str>, Entry>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: CacheConfig,
    pub(crate) clock: Clock,
    generation: AtomicU64,
    pub(crate) flights: crate::flight::Flights,
    /// The clock's reading at construction, monotonic and wall: turns a monotonic `now` into a
    /// Unix second for the per-second statistics without a second clock read.
    origin: (Instant, u64),
}

struct EntryExpiry {
    enabled: bool,
}

impl EntryExpiry {
    fn ttl(&self, entry: &Entry, at: Instant) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        entry
            .expires_at
            .map(|expires| expires.saturating_duration_since(at))
    }
}

impl moka::Expiry<Arc<str>, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        entry: &Entry,
        created: Instant,
    ) -> Option<Duration> {
        self.ttl(entry, created)
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        entry: &Entry,
        updated: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(entry, updated)
    }
}

impl Cache {
    /// A cache on the system clock.
    pub fn new(config: CacheConfig) -> Self {
        Self::with_clock(config, Clock::system())
    }

    /// A cache reading time from `clock` (tests pass a mock clock and advance it).
    pub fn with_clock(config: CacheConfig, clock: Clock) -> Self {
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            keys: KeyIndex::default(),
            tags: Mutex::new(HashMap::new()),
        });
        let listener_shared = shared.clone();
        let max_memory = config.max_memory.bytes();
        // With an entry bound, every entry weighs at least max_memory / max_entries, so at most
        // max_entries fit (moka bounds by one measure only).
        let min_weight = max_memory.checked_div(config.max_entries).unwrap_or(0);
        let store = Moka::builder()
            .max_capacity(max_memory)
            .weigher(move |key: &Arc<str>, entry: &Entry| {
                let w = (entry.weight(key) as u64).max(min_weight);
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            // Under a mock clock the cache's own TTL check decides; moka's real-time expiry
            // would otherwise race the test's notion of time.
            .expire_after(EntryExpiry {
                enabled: !clock.is_mock(),
            })
            .eviction_listener(move |key: Arc<Arc<str>>, entry: Entry, cause| {
                listener_shared.on_removal(&key, &entry, cause);
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                store,
                shared,
                config,
                generation: AtomicU64::new(1),
                flights: crate::flight::Flights::default(),
                origin: (clock.now(), clock.unix_ms()),
                clock,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// `at` as nanoseconds since the cache's origin (the index's time scale).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.origin.0).as_nanos())
            .unwrap_or(NEVER - 1)
    }

    fn second(&self, now: Instant) -> u64 {
        let (origin, origin_ms) = self.inner.origin;
        (origin_ms + now.saturating_duration_since(origin).as_millis() as u64) / 1000
    }

    /// Reads a live entry. Counts a hit or a miss.
    pub fn get(&self, key: &str) -> Option<CacheValue> {
        let now = self.inner.clock.now();
        let found = self.live_entry(key, now);
        let c = &self.inner.shared.counters;
        c.recent.tick(self.second(now), &c.hits, &c.misses);
        match found {
            Some(entry) => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                Some(self.value_of(entry, now))
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The live entry under `key`, removing it if it has expired. Counts nothing else.
    fn live_entry(&self, key: &str, now: Instant) -> Option<Entry> {
        let entry = self.inner.store.get(key)?;
        if entry.expired(now) {
            if self.remove_if_generation(key, entry.generation) {
                self.inner
                    .shared
                    .counters
                    .expired
                    .fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        Some(entry)
    }

    /// The caller's view of an entry; moves the bytes out instead of cloning them.
    pub(crate) fn value_of(&self, entry: Entry, now: Instant) -> CacheValue {
        let ttl_remaining = remaining(&entry, now);
        let bytes = if entry.compressed {
            entry.value()
        } else {
            entry.data
        };
        CacheValue {
            bytes,
            ttl_remaining,
            etag: entry.etag,
            meta: entry.meta,
        }
    }

    /// Checks a write without performing it.
    pub fn validate(
        &self,
        key: &str,
        value_len: usize,
        options: &SetOptions,
    ) -> Result<(), CacheError> {
        validate_key(key)?;
        let max = self.inner.config.max_value_size.bytes();
        if value_len as u64 > max {
            return Err(CacheError::ValueTooLarge {
                size: value_len,
                max,
            });
        }
        options.tags.iter().try_for_each(|t| validate_tag(t))
    }

    /// Stores `value` under `key`.
    pub fn set(
        &self,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> Result<SetOutcome, CacheError> {
        self.validate(key, value.len(), &options)?;
        Ok(self.insert(key, value, options))
    }

    /// Stores every entry, or none: all are validated first.
    pub fn set_many(
        &self,
        entries: Vec<(String, Bytes, SetOptions)>,
    ) -> Result<Vec<SetOutcome>, CacheError> {
        for (index, (key, value, options)) in entries.iter().enumerate() {
            self.validate(key, value.len(), options)
                .map_err(|e| CacheError::InBatch {
                    index,
                    source: Box::new(e),
                })?;
        }
        Ok(entries
            .into_iter()
            .map(|(k, v, o)| self.insert(&k, v, o))
            .collect())
    }

    fn insert(&self, key: &str, value: Bytes, options: SetOptions) -> SetOutcome {
        let ttl = match options.ttl {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => Some(self.inner.config.default_ttl.get()).filter(|t| !t.is_zero()),
        };
        let logical_len = value.len();
        let etag = content_hash(&value);
        let (data, compressed) =
            maybe_compress(value, self.inner.config.compress_min_bytes.bytes() as usize);
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
        let now = self.inner.clock.now();
        let mut tags: Vec<Arc<str>> = options.tags.iter().map(|t| Arc::from(t.as_str())).collect();
        tags.sort();
        tags.dedup();
        let meta = (options.content_type.is_some() || !tags.is_empty()).then(|| {
            Arc::new(Meta {
                content_type: options.content_type.map(String::into_boxed_str),
                tags: tags.into_boxed_slice(),
            })
        });
        let entry = Entry {
            data,
            expires_at: ttl.map(|t| now + t),
            generation,
            etag,
            // Values are validated against max_value_size, which is below 2 GiB.
            logical_len: u32::try_from(logical_len).unwrap_or(u32::MAX),
            compressed,
            meta,
        };
        let key: Arc<str> = Arc::from(key);
        let c = &self.inner.shared.counters;
        c.sets.fetch_add(1, Ordering::Relaxed);
        c.entries.fetch_add(1, Ordering::Relaxed);
        c.logical_bytes
            .fetch_add(entry.logical(&key) as i64, Ordering::Relaxed);
        c.stored_bytes
            .fetch_add(entry.weight(&key) as i64, Ordering::Relaxed);
        if !entry.tags().is_empty() {
            let mut index = lock(&self.inner.shared.tags);
            for tag in entry.tags() {
                index
                    .entry(tag.clone())
                    .or_default()
                    .insert(key.clone(), generation);
            }
        }
        let expires = entry.expires_at.map_or(NEVER, |at| self.nanos(at));
        self.inner.store.insert(key.clone(), entry);
        let existed =
            self.inner
                .shared
                .keys
                .record_write(&key, generation, expires, self.nanos(now));
        if existed {
            SetOutcome::Replaced
        } else {
            SetOutcome::Created
        }
    }

    /// Reads many keys; `None` for each miss.
    pub fn get_many(&self, keys: &[String]) -> Vec<Option<CacheValue>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Deletes `key`. Returns whether a live entry was removed.
    pub fn delete(&self, key: &str) -> bool {
        let removed = self.inner.store.remove(key);
        match removed {
            Some(entry) if !entry.expired(self.inner.clock.now()) => {
                self.inner
                    .shared
                    .counters
                    .deletes
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(_) => {
                self.inner
                    .shared
                    .counters
                    .expired
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
            None => false,
        }
    }

    /// Removes `key` only if it still holds the write with `generation`.
    pub(crate) fn remove_if_generation(&self, key: &str, generation: u64) -> bool {
        let key: Arc<str> = Arc::from(key);
        let result = self
            .inner
            .store
            .entry(key)
            .and_compute_with(|current| match current {
                Some(e) if e.value().generation == generation => Op::Remove,
                _ => Op::Nop,
            });
        matches!(result, moka::ops::compute::CompResult::Removed(_))
    }

    /// Removes every entry carrying `tag`. Returns how many live entries were removed.
    pub fn invalidate_tag(&self, tag: &str) -> usize {
        let members: Vec<(Arc<str>, u64)> = {
            let mut index = lock(&self.inner.shared.tags);
            index
                .remove(tag)
                .map(|m| m.into_iter().collect())
                .unwrap_or_default()
        };
        let now = self.inner.clock.now();
        let mut removed = 0;
        for (key, generation) in members {
            let live = self
                .inner
                .store
                .get(&key)
                .is_some_and(|e| e.generation == generation && !e.expired(now));
            if self.remove_if_generation(&key, generation) && live {
                removed += 1;
            }
        }
        self.inner
            .shared
            .counters
            .invalidated_tag
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Lists live keys matching `pattern` in key order, starting after `cursor`, at most `limit`
    /// of them. Examines at most `max(10 × limit, 1000)` keys per call, so a sparse pattern
    /// returns short pages rather than walking the whole keyspace at once; follow `next_cursor`
    /// until it is `None`.
    pub fn scan(&self, pattern: &Glob, cursor: Option<&str>, limit: usize) -> KeyPage {
        let limit = limit.max(1);
        let now = self.inner.clock.now();
        let mut keys = Vec::new();
        let next_cursor = self.walk(pattern, cursor, (limit * 10).max(1000), |item| {
            let key = item.key();
            match self.inner.store.get(key) {
                Some(e) if !e.expired(now) => keys.push(KeyInfo {
                    size: e.logical_len as usize,
                    stored_size: e.weight(key),
                    ttl_remaining: remaining(&e, now),
                    key: key.clone(),
                }),
                Some(_) => {}
                None => {
                    // A stale index entry (the value was evicted); drop it unless rewritten.
                    KeyIndex::forget_entry(item, KeyIndex::generation(item));
                }
            }
            keys.len() < limit
        });
        KeyPage { keys, next_cursor }
    }

    /// Deletes the keys matching `pattern` among the next `batch` keys after `cursor`. Returns
    /// how many live entries were removed and where to continue (`None` when done). Callers
    /// loop, yielding between batches, so a large delete never blocks others for long.
    pub fn delete_matching(
        &self,
        pattern: &Glob,
        cursor: Option<&str>,
        batch: usize,
    ) -> (usize, Option<String>) {
        let now = self.inner.clock.now();
        let mut removed = 0;
        let next_cursor = self.walk(pattern, cursor, batch.max(1), |item| {
            let (key, generation) = (item.key(), KeyIndex::generation(item));
            let live = self
                .inner
                .store
                .get(key)
                .is_some_and(|e| e.generation == generation && !e.expired(now));
            if self.remove_if_generation(key, generation) && live {
                removed += 1;
            }
            true
        });
        self.inner
            .shared
            .counters
            .invalidated_pattern
            .fetch_add(removed as u64, Ordering::Relaxed);
        (removed, next_cursor)
    }

    /// Walks the key index in order from `cursor`, examining at most `budget` keys, and calls
    /// `visit` for each key matching `pattern` until it returns `false`. Returns the cursor to
    /// continue from, or `None` when no key is left. Holds no lock: the index is a concurrent
    /// skip list, so writers proceed while a walk runs, and a key present throughout a paged
    /// walk is visited exactly once.
    fn walk(
        &self,
        pattern: &Glob,
        cursor: Option<&str>,
        budget: usize,
        mut visit: impl FnMut(&IndexEntry<'_>) -> bool,
    ) -> Option<String> {
        let prefix = pattern.literal_prefix();
        let mut last: Option<Arc<str>> = None;
        for (examined, item) in self.range_from(pattern, cursor).enumerate() {
            if !item.key().starts_with(prefix) {
                return None;
            }
            if examined == budget {
                return last.map(|k| k.to_string());
            }
            last = Some(item.key().clone());
            if pattern.matches(item.key()) && !visit(&item) {
                return last.map(|k| k.to_string());
            }
        }
        None
    }

    fn range_from<'a>(
        &'a self,
        pattern: &Glob,
        cursor: Option<&str>,
    ) -> impl Iterator<Item = IndexEntry<'a>> + 'a {
        use std::ops::Bound;
        let prefix: Arc<str> = Arc::from(pattern.literal_prefix());
        let start = match cursor {
            Some(c) if *c >= *prefix => Bound::Excluded(Arc::from(c)),
            _ => Bound::Included(prefix),
        };
        self.inner.shared.keys.range(start)
    }

    /// Removes every entry.
    pub fn reset(&self) -> usize {
        let live = self
            .inner
            .shared
            .counters
            .entries
            .load(Ordering::Relaxed)
            .max(0) as u64;
        self.inner.store.invalidate_all();
        self.inner.store.run_pending_tasks();
        self.inner
            .shared
            .counters
            .cleared
            .fetch_add(live, Ordering::Relaxed);
        live as usize
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> CacheStats {
        self.inner.shared.counters.snapshot(
            self.second(self.inner.clock.now()),
            self.inner.config.max_memory.bytes(),
        )
    }

    /// Runs moka's pending maintenance (evictions, expirations) now. Useful in tests and before
    /// reading exact byte totals.
    pub fn run_pending_tasks(&self) {
        self.inner.store.run_pending_tasks();
    }
}

fn remaining(entry: &Entry, now: Instant) -> Option<Duration> {
    entry.expires_at.map(|at| at.saturating_duration_since(now))
}

impl Shared {
    fn on_removal(&self, key: &Arc<str>, entry: &Entry, cause: RemovalCause) {
        let c = &self.counters;
        c.entries.fetch_sub(1, Ordering::Relaxed);
        c.logical_bytes
            .fetch_sub(entry.logical(key) as i64, Ordering::Relaxed);
        c.stored_bytes
            .fetch_sub(entry.weight(key) as i64, Ordering::Relaxed);
        match cause {
            RemovalCause::Size => {
                c.evicted_size.fetch_add(1, Ordering::Relaxed);
            }
            RemovalCause::Expired => {
                c.expired.fetch_add(1, Ordering::Relaxed);
            }
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        }
        // On replacement the key stays in the index; otherwise drop it unless a newer write
        // already took its place.
        if cause != RemovalCause::Replaced {
            self.keys.forget(key, entry.generation);
        }
        if !entry.tags().is_empty() {
            let mut index = lock(&self.tags);
            for tag in entry.tags() {
                if let Some(members) = index.get_mut(tag) {
                    if members.get(key) == Some(&entry.generation) {
                        members.remove(key);
                    }
                    if members.is_empty() {
                        index.remove(tag);
                    }
                }
            }
        }
    }
}
