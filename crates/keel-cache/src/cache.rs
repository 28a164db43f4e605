//! The cache engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_core::Clock;
use moka::sync::Cache as Moka;

use crate::config::CacheConfig;
use crate::entry::{Entry, Meta, etag, maybe_compress};
use crate::error::{CacheError, validate_key, validate_tag};
use crate::index::{KeyIndex, NEVER, Previous, Slot};
use crate::stats::Counters;
use crate::tags::Tags;

/// The shortest TTL anchored on the coarse clock (see `Cache::write_time`).
const COARSE_TTL_FLOOR: Duration = Duration::from_secs(1);
/// More than the coarse clock can be off (two timer ticks of at most 10 ms): a deadline
/// further than this past the coarse reading has certainly not passed.
const COARSE_MARGIN: Duration = Duration::from_millis(50);

/// How to store a value.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// Time to live: `None` = `cache.default_ttl`; `Some(Duration::ZERO)` = never expires.
    pub ttl: Option<Duration>,
    /// The content type to return with the value.
    pub content_type: Option<String>,
    /// Tags to invalidate the entry by.
    pub tags: Vec<String>,
    /// Store the bytes as given, never compressed: for values that are compressed already, or
    /// read so often that decompressing on every read costs more than the memory saved.
    pub uncompressed: bool,
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
    /// A strong validator: unique to the write that stored the value (a rewrite with the same
    /// bytes gets a new one); [`CacheValue::etag_hex`] formats it.
    pub etag: u64,
    expires_at: Option<Instant>,
    meta: Option<Arc<Meta>>,
    // The cache's clock, so the remaining TTL is computed when asked for: reads that do not
    // ask do not pay for a clock read.
    clock: Clock,
}

impl CacheValue {
    /// Time left before the value expires (`None` = never), to within a few milliseconds (read
    /// from the coarse clock, as TTLs of a second or more are anchored).
    pub fn ttl_remaining(&self) -> Option<Duration> {
        let now = self.clock.now_coarse();
        self.expires_at.map(|at| at.saturating_duration_since(now))
    }

    /// The content type given when the value was stored.
    pub fn content_type(&self) -> Option<&str> {
        let bytes = self.meta.as_ref()?.content_type.as_ref()?;
        // Stored from a `String`, so always UTF-8.
        std::str::from_utf8(bytes).ok()
    }

    /// The content type as shared bytes, to put in a header without copying.
    pub fn content_type_bytes(&self) -> Option<Bytes> {
        self.meta.as_ref()?.content_type.clone()
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

/// An in-memory cache bounded by bytes, with TTLs, tags, glob patterns, single-flight loading,
/// compression and statistics. Cheap to clone; clones share the same entries.
///
/// With the system clock, each cache runs a maintenance thread (`keel-cache`) that wakes once a
/// second to record the recent hit ratios and sweep out expired and evicted keys; it ends
/// within a second of the last clone being dropped.
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
    /// The memory tier. Values are shared so the key index can hold a weak reference to each
    /// and learn when the tier drops it.
    pub(crate) store: Moka<Arc<str>, Arc<Entry>, foldhash::quality::RandomState>,
    pub(crate) counters: Counters,
    /// Every key, ordered, with its latest write's generation, expiry and logical size.
    pub(crate) keys: KeyIndex,
    pub(crate) tags: Tags,
    pub(crate) config: CacheConfig,
    pub(crate) clock: Clock,
    /// Numbers the values handed out without being stored, for their ETags (stored writes get
    /// their generation from the key index).
    detached: AtomicU64,
    /// Mixed into ETags, so they differ between processes whose write counters coincide.
    etag_salt: u64,
    pub(crate) flights: crate::flight::Flights,
    /// The clock's reading at construction, monotonic and wall: turns a monotonic `now` into a
    /// Unix second for the per-second statistics without a second clock read.
    origin: (Instant, u64),
}

impl Cache {
    /// A cache on the system clock.
    pub fn new(config: CacheConfig) -> Self {
        Self::with_clock(config, Clock::system())
    }

    /// A cache reading time from `clock` (tests pass a mock clock and advance it).
    pub fn with_clock(config: CacheConfig, clock: Clock) -> Self {
        let max_memory = config.max_memory.bytes();
        // With an entry bound, every entry weighs at least max_memory / max_entries, so at most
        // max_entries fit (moka bounds by one measure only).
        let min_weight = max_memory.checked_div(config.max_entries).unwrap_or(0);
        let builder = Moka::builder().max_capacity(max_memory).weigher(
            move |key: &Arc<str>, entry: &Arc<Entry>| {
                let w = (entry.weight(key) as u64).max(min_weight);
                u32::try_from(w).unwrap_or(u32::MAX)
            },
        );
        // No eviction listener: moka would take a per-key lock on every write to serve one;
        // the key index notices evictions instead (see `index`). No per-entry expiry in moka
        // either: its timer wheel costs every write about a tenth of its time, and the engine
        // checks TTLs on its own clock anyway. Expired entries are reclaimed as Redis does it:
        // when read, and by the sweep (see `maintenance`).
        // foldhash instead of SipHash: moka hashes the key on every operation, and foldhash is
        // several times faster on short keys while still seeded per process.
        let store = builder.build_with_hasher(foldhash::quality::RandomState::default());
        let cache = Self {
            inner: Arc::new(Inner {
                store,
                counters: Counters::default(),
                keys: KeyIndex::default(),
                tags: Tags::default(),
                config,
                detached: AtomicU64::new(1),
                etag_salt: crate::entry::random_salt(),
                flights: crate::flight::Flights::default(),
                origin: (clock.now(), clock.unix_ms()),
                clock,
            }),
        };
        if !cache.inner.clock.is_mock() {
            cache.spawn_maintenance();
        }
        cache
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// `at` as nanoseconds since the cache's origin (the index's time scale).
    pub(crate) fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.origin.0).as_nanos())
            .unwrap_or(NEVER - 1)
    }

    pub(crate) fn second(&self, now: Instant) -> u64 {
        let (origin, origin_ms) = self.inner.origin;
        (origin_ms + now.saturating_duration_since(origin).as_millis() as u64) / 1000
    }

    /// Reads a live entry. Counts a hit or a miss.
    pub fn get(&self, key: &str) -> Option<CacheValue> {
        let found = self.live_entry(key);
        let c = &self.inner.counters;
        match found {
            Some(entry) => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                Some(self.value_of(entry))
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Whether `key` holds a live entry. Counts no hit or miss and does not make the entry
    /// look more used to the eviction policy.
    pub fn contains(&self, key: &str) -> bool {
        let now = self.nanos(self.inner.clock.now());
        self.inner
            .keys
            .expiry_of(key)
            .is_some_and(|expires| expires > now)
            && self.inner.store.contains_key(key)
    }

    /// The live entry under `key`. Counts nothing but an expiry it notices, which it also
    /// reclaims. Reads the clock only for an entry that has a TTL (and, under a mock clock, to
    /// record the recent ratios, which the maintenance thread does on the system clock).
    pub(crate) fn live_entry(&self, key: &str) -> Option<Arc<Entry>> {
        let entry = self.inner.store.get(key);
        let clock = &self.inner.clock;
        if clock.is_mock() {
            let c = &self.inner.counters;
            c.recent.tick(self.second(clock.now()), &c.hits, &c.misses);
        }
        let entry = entry?;
        if entry.expires_at.is_some_and(|at| self.passed(at)) {
            self.remove_write(key, entry.generation, Removal::Expired);
            return None;
        }
        Some(entry)
    }

    /// Whether `deadline` has passed. Exact, and without a precise clock read unless the
    /// deadline is within [`COARSE_MARGIN`] of the coarse clock's reading.
    pub(crate) fn passed(&self, deadline: Instant) -> bool {
        let clock = &self.inner.clock;
        deadline <= clock.now_coarse() + COARSE_MARGIN && deadline <= clock.now()
    }

    /// Whether `deadline` (index time) has passed, given `now` (index time) from the coarse
    /// clock. Exact: a deadline within [`COARSE_MARGIN`] of `now` is decided on the precise clock.
    fn passed_at(&self, deadline: u64, now: u64) -> bool {
        let margin = COARSE_MARGIN.as_nanos() as u64;
        if deadline.abs_diff(now) > margin {
            deadline <= now
        } else {
            deadline <= self.nanos(self.inner.clock.now())
        }
    }

    /// The caller's view of an entry. Copies out what it needs rather than keeping the entry:
    /// the key index learns of evictions from nothing holding the entry any more.
    pub(crate) fn value_of(&self, entry: Arc<Entry>) -> CacheValue {
        CacheValue {
            bytes: entry.value(),
            etag: etag(self.inner.etag_salt, entry.generation),
            expires_at: entry.expires_at,
            meta: entry.meta.clone(),
            clock: self.inner.clock.clone(),
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
        Ok(self.insert(key, value, options, false).0)
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
            .map(|(k, v, o)| self.insert(&k, v, o, false).0)
            .collect())
    }

    /// Stores `value` under `key` and returns it as a read would (counting no hit): for a
    /// tier below that fills this one on a miss.
    pub fn fill(
        &self,
        key: &str,
        value: Bytes,
        options: SetOptions,
    ) -> Result<CacheValue, CacheError> {
        self.validate(key, value.len(), &options)?;
        let (_, entry) = self.insert(key, value, options, true);
        let entry = entry.expect("insert keeps the entry when asked");
        Ok(self.value_of(entry))
    }

    /// `value` as a read would return it after storing it with `options`, without storing it:
    /// for a value from a tier below that must not be kept here.
    pub fn detached(&self, value: Bytes, options: SetOptions) -> CacheValue {
        let ttl = self.ttl_for(&options);
        let mut entry = self.entry_for(value, options, ttl, self.write_time(ttl));
        entry.generation =
            crate::index::detached(self.inner.detached.fetch_add(1, Ordering::Relaxed));
        self.value_of(Arc::new(entry))
    }

    /// Stores a write; returns its outcome and, with `keep`, the stored entry (a plain set
    /// does not ask: one more reference count to move on every write).
    fn insert(
        &self,
        key: &str,
        value: Bytes,
        options: SetOptions,
        keep: bool,
    ) -> (SetOutcome, Option<Arc<Entry>>) {
        let ttl = self.ttl_for(&options);
        let now = self.write_time(ttl);
        let now_nanos = self.nanos(now);
        let mut entry = self.entry_for(value, options, ttl, now);
        let expires = ttl.map_or(NEVER, |t| {
            now_nanos.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(NEVER))
        });
        let logical = entry.logical(key) as u64;
        let tags = entry.meta.as_ref().filter(|m| !m.tags.is_empty()).cloned();
        let mut stored = None;
        let mut generation = 0;
        let store = &self.inner.store;
        let (previous, key) = self.inner.keys.write(key, tags.is_some(), |g, key| {
            generation = g;
            entry.generation = g;
            let entry = Arc::new(entry);
            let write = Slot {
                generation,
                expires,
                logical,
                value: Arc::downgrade(&entry),
            };
            if keep {
                stored = Some(entry.clone());
            }
            store.insert(key, entry);
            write
        });
        if let (Some(meta), Some(key)) = (tags, key) {
            self.inner.tags.add(&meta.tags, &key, generation, |k, g| {
                self.inner.keys.holds(k, g)
            });
        }
        let c = &self.inner.counters;
        let outcome = match previous {
            Previous::None => {
                self.sweep_some();
                SetOutcome::Created
            }
            Previous::Write { expires, .. } if self.passed_at(expires, now_nanos) => {
                c.expired.fetch_add(1, Ordering::Relaxed);
                SetOutcome::Created
            }
            Previous::Write { held: false, .. } => {
                // Evicted without anyone noticing until now.
                c.evicted_size.fetch_add(1, Ordering::Relaxed);
                SetOutcome::Created
            }
            Previous::Write { held: true, .. } => SetOutcome::Replaced,
        };
        (outcome, stored)
    }

    /// A write's TTL: its own, else the default; `None` = never expires.
    fn ttl_for(&self, options: &SetOptions) -> Option<Duration> {
        match options.ttl {
            Some(t) if t.is_zero() => None,
            Some(t) => Some(t),
            None => Some(self.inner.config.default_ttl.get()).filter(|t| !t.is_zero()),
        }
    }

    /// The time a write with `ttl` is anchored at. A TTL of a second or more (and no TTL)
    /// takes the coarse clock, a few milliseconds off at most, which is a fraction of a percent
    /// of the TTL and saves a precise clock read that is a measurable part of a write; a
    /// shorter TTL takes the precise clock.
    fn write_time(&self, ttl: Option<Duration>) -> Instant {
        let clock = &self.inner.clock;
        match ttl {
            Some(t) if t < COARSE_TTL_FLOOR => clock.now(),
            _ => clock.now_coarse(),
        }
    }

    /// The entry a write with `ttl` stores at `now`, compressed if worth it; its generation is
    /// set when it is stored (or handed out unstored).
    fn entry_for(
        &self,
        value: Bytes,
        options: SetOptions,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Entry {
        let logical_len = value.len();
        let (data, compressed) = if options.uncompressed {
            (value, false)
        } else {
            maybe_compress(value, self.inner.config.compress_min_bytes.bytes() as usize)
        };
        let mut tags: Vec<Arc<str>> = options.tags.iter().map(|t| Arc::from(t.as_str())).collect();
        tags.sort();
        tags.dedup();
        let meta = (options.content_type.is_some() || !tags.is_empty()).then(|| {
            Arc::new(Meta {
                content_type: options.content_type.map(Bytes::from),
                tags: tags.into_boxed_slice(),
            })
        });
        Entry {
            data,
            expires_at: ttl.map(|t| now + t),
            generation: 0,
            // Values are validated against max_value_size, which is below 2 GiB.
            logical_len: u32::try_from(logical_len).unwrap_or(u32::MAX),
            compressed,
            meta,
        }
    }

    /// Reads many keys; `None` for each miss.
    pub fn get_many(&self, keys: &[String]) -> Vec<Option<CacheValue>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Deletes `key`. Returns whether a live entry was removed.
    pub fn delete(&self, key: &str) -> bool {
        self.remove_key(key, None, &self.inner.counters.deletes)
    }

    /// Removes the write `generation` of `key`, if it is still the latest, and counts it: under
    /// `cause` if it was live, otherwise as expired or evicted. Returns whether a live value
    /// was removed.
    pub(crate) fn remove_write(&self, key: &str, generation: u64, cause: Removal) -> bool {
        self.remove_key(key, Some(generation), cause.counter(&self.inner.counters))
    }

    fn remove_key(&self, key: &str, generation: Option<u64>, cause: &AtomicU64) -> bool {
        let store = &self.inner.store;
        let Some((slot, removed)) = self
            .inner
            .keys
            .remove(key, generation, || store.remove(key))
        else {
            return false;
        };
        let now = self.nanos(self.inner.clock.now());
        let c = &self.inner.counters;
        let (counter, removed_live) = if slot.expires <= now {
            (&c.expired, false)
        } else if removed.is_some() {
            (cause, true)
        } else {
            // Already gone from the store: evicted before anyone noticed.
            (&c.evicted_size, false)
        };
        counter.fetch_add(1, Ordering::Relaxed);
        removed_live
    }

    /// Removes every entry carrying `tag`. Returns how many live entries were removed.
    pub fn invalidate_tag(&self, tag: &str) -> usize {
        self.inner
            .tags
            .take(tag)
            .into_iter()
            .filter(|(key, generation)| self.remove_write(key, *generation, Removal::Tag))
            .count()
    }
}

/// Why the cache removes an entry itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// Its TTL passed.
    Expired,
    /// A tag invalidation.
    Tag,
    /// A pattern delete.
    Pattern,
}

impl Removal {
    fn counter(self, c: &Counters) -> &AtomicU64 {
        match self {
            Removal::Expired => &c.expired,
            Removal::Tag => &c.invalidated_tag,
            Removal::Pattern => &c.invalidated_pattern,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_near_the_coarse_reading_is_decided_on_the_precise_clock() {
        let (clock, time) = Clock::mock();
        let cache = Cache::with_clock(CacheConfig::default(), clock);
        let ms = |n: u64| n * 1_000_000;
        time.advance(Duration::from_secs(1));
        let stale = cache.nanos(cache.inner.clock.now());
        // The precise clock has moved on 30 ms since `stale` was read.
        time.advance(Duration::from_millis(30));
        // Within the margin of `stale`: the precise clock decides, both ways.
        assert!(cache.passed_at(stale + ms(20), stale));
        assert!(!cache.passed_at(stale + ms(40), stale));
        // Farther: the reading decides (the coarse clock is never that far off), even where
        // the precise clock would say otherwise.
        assert!(!cache.passed_at(stale + ms(10), stale - ms(45)));
        assert!(cache.passed_at(stale + ms(40), stale + ms(95)));
        assert!(!cache.passed_at(NEVER, stale));
    }
}
