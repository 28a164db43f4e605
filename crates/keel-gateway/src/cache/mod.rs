//! The gateway's response cache, kept in the keel cache engine (so it shares its memory bound
//! and statistics) under `gw:` keys.
//!
//! - `control`: `Cache-Control`, `Expires`, `Age` as a shared cache reads them.
//! - `key`: cache keys from a route's key template, and `Vary` variants.
//! - `stored`: a response as bytes in the engine.
//! - `heads`: stored responses' heads, decoded once per write.
//! - `flights`: one upstream fetch per key at a time (request coalescing).

pub(crate) mod control;
pub(crate) mod flights;
pub(crate) mod heads;
pub(crate) mod key;
pub(crate) mod stored;

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use keel_cache::{Cache, CacheValue, Glob, SetOptions};
use keel_core::Clock;
use keel_redis::{Broadcaster, Invalidation};

use self::flights::Flights;
use self::heads::{Head, Heads};
use self::stored::{Entry, Stored};

/// Tags of gateway entries carry this prefix in the engine, apart from the API cache's tags.
const TAG_PREFIX: &str = "gw:";

/// Responses cached by the gateway.
pub(crate) struct ResponseCache {
    engine: Cache,
    clock: Clock,
    pub(crate) flights: Flights,
    heads: Heads,
    /// With Redis: tells the other instances about purges, so they drop their copies too.
    broadcast: Option<Broadcaster>,
}

impl ResponseCache {
    pub(crate) fn new(engine: Cache, clock: Clock, broadcast: Option<Broadcaster>) -> Self {
        Self {
            engine,
            clock,
            flights: Flights::default(),
            heads: Heads::default(),
            broadcast,
        }
    }

    fn tell_others(&self, what: Invalidation) {
        if let Some(broadcast) = &self.broadcast {
            broadcast.send(what);
        }
    }

    /// Now, in Unix milliseconds, by the gateway's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// Largest body the engine accepts as a value (larger responses are streamed, not stored).
    pub(crate) fn max_object(&self) -> usize {
        usize::try_from(self.engine.config().max_value_size.bytes()).unwrap_or(usize::MAX)
    }

    /// The response stored for a request whose primary key is `primary`, following a `Vary`
    /// marker to the variant the request's headers pick. Returns the key it was found under.
    pub(crate) fn lookup(&self, primary: &str, request: &HeaderMap) -> Option<(String, Stored)> {
        let value = self.engine.get(primary)?;
        match self.decode(value)? {
            Entry::Response(stored) => Some((primary.to_owned(), stored)),
            Entry::Vary(names) => {
                let key = key::variant(primary, &names, request);
                match self.decode(self.engine.get(&key)?)? {
                    Entry::Response(stored) => Some((key, stored)),
                    Entry::Vary(_) => None,
                }
            }
        }
    }

    /// A value read from the engine, decoded: a response's head from [`Heads`] when this write
    /// was decoded before.
    fn decode(&self, value: CacheValue) -> Option<Entry> {
        if let Some(head) = self.heads.get(value.etag) {
            return Some(Entry::Response(head.stored(&value.bytes)));
        }
        let len = value.bytes.len();
        let entry = Entry::decode(value.bytes)?;
        if let Entry::Response(stored) = &entry {
            self.heads.put(value.etag, Head::of(stored, len));
        }
        Some(entry)
    }

    /// Stores `stored` for a request with primary key `primary`; a response that varies on
    /// `vary` goes under its variant key with a marker at the primary key. Kept in the engine
    /// for `keep`. Returns the key it went under.
    pub(crate) fn store(
        &self,
        primary: &str,
        request: &HeaderMap,
        vary: &[HeaderName],
        stored: &Stored,
        keep: Duration,
    ) -> String {
        let ttl = keep.max(Duration::from_millis(1));
        let key = if vary.is_empty() {
            primary.to_owned()
        } else {
            // The marker lives as long as the variant just stored; a later variant with a longer
            // life extends it.
            let marker = SetOptions {
                ttl: Some(ttl),
                uncompressed: true,
                ..SetOptions::default()
            };
            let _ = self.engine.set(primary, Entry::encode_vary(vary), marker);
            key::variant(primary, vary, request)
        };
        let options = SetOptions {
            ttl: Some(ttl),
            tags: stored
                .tags
                .iter()
                .map(|t| format!("{TAG_PREFIX}{t}"))
                .filter(|t| keel_cache::validate_tag(t).is_ok())
                .collect(),
            // Read on every hit: decompressing each time would cost more than it saves.
            uncompressed: true,
            ..SetOptions::default()
        };
        if let Err(e) = self.engine.set(&key, stored.encode(), options) {
            tracing::debug!(key, error = %e, "response not cached");
        }
        key
    }

    /// Stores `stored` at exactly `key` (a revalidated copy, an encoded variant).
    pub(crate) fn store_at(&self, key: &str, stored: &Stored, keep: Duration) {
        self.store(key, &HeaderMap::new(), &[], stored, keep);
    }

    /// The response stored at exactly `key`.
    pub(crate) fn get_at(&self, key: &str) -> Option<Stored> {
        match Entry::decode(self.engine.get(key)?.bytes)? {
            Entry::Response(stored) => Some(stored),
            Entry::Vary(_) => None,
        }
    }

    /// Purges the cached responses of a path with query (every variant). Returns how many.
    pub(crate) fn purge_url(&self, target: &str) -> usize {
        let uri: http::Uri = match target.parse() {
            Ok(u) => u,
            Err(_) => return 0,
        };
        let primary = key::KeyTemplate::default().primary(&uri, &HeaderMap::new());
        let exact = usize::from(self.engine.delete(&primary));
        self.tell_others(Invalidation::Key(primary.clone()));
        exact + self.purge_glob(&format!("{} *", Glob::escape(&primary)))
    }

    /// Purges every cached response whose path (with query) matches the glob `pattern`.
    pub(crate) fn purge_pattern(&self, pattern: &str) -> usize {
        self.purge_glob(&format!("{}{pattern}", key::PREFIX))
    }

    /// Purges every cached response tagged `tag` by the upstream.
    pub(crate) fn purge_tag(&self, tag: &str) -> usize {
        let tag = format!("{TAG_PREFIX}{tag}");
        self.tell_others(Invalidation::Tag(tag.clone()));
        self.engine.invalidate_tag(&tag)
    }

    fn purge_glob(&self, pattern: &str) -> usize {
        self.tell_others(Invalidation::Pattern(pattern.to_owned()));
        self.engine.delete_all_matching(&Glob::new(pattern))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use keel_cache::CacheConfig;

    use super::stored::Times;
    use super::*;

    fn response(body: &'static str, etag: &'static str) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ETAG, HeaderValue::from_static(etag));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Stored {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body.as_bytes()),
            times: Times::sample(),
            tags: vec!["habits".into()],
        }
    }

    fn same(a: &Stored, b: &Stored) -> bool {
        a.status == b.status
            && a.headers == b.headers
            && a.body == b.body
            && a.times == b.times
            && a.tags == b.tags
    }

    #[test]
    fn hits_decode_a_head_once_per_write_and_see_every_rewrite() {
        let cache = ResponseCache::new(Cache::new(CacheConfig::default()), Clock::system(), None);
        let none = HeaderMap::new();
        let first = response("[1,2,3]", "\"v1\"");
        cache.store("gw:/habits", &none, &[], &first, Duration::from_secs(60));
        for _ in 0..3 {
            let (key, hit) = cache.lookup("gw:/habits", &none).unwrap();
            assert_eq!(key, "gw:/habits");
            assert!(same(&hit, &first));
        }
        assert_eq!(
            cache.heads.len(),
            1,
            "decoded once, then served from the head"
        );

        // A rewrite of the key is a new write: its own head, never the old one.
        let second = response("[4,5]", "\"v2\"");
        cache.store("gw:/habits", &none, &[], &second, Duration::from_secs(60));
        let (_, hit) = cache.lookup("gw:/habits", &none).unwrap();
        assert!(same(&hit, &second));
        assert_eq!(cache.heads.len(), 2);
    }
}
