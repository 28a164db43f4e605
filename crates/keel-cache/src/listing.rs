//! Listing and deleting keys by glob pattern, in cursor pages over the ordered key index.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Cache, Removal};
use crate::glob::Glob;
use crate::index::{Position, Slot};

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
    /// Matching live keys, shard by shard and in key order within a shard.
    pub keys: Vec<KeyInfo>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next_cursor: Option<String>,
}

impl Cache {
    /// Lists live keys matching `pattern`, starting from `cursor`, at most `limit` of them.
    /// Keys come shard by shard, in key order within each shard (like Redis's `SCAN`, not
    /// sorted overall). Examines at most `max(10 × limit, 1000)` keys per call, so a sparse
    /// pattern returns short pages rather than walking the whole keyspace at once; follow
    /// `next_cursor` until it is `None`. A key present throughout the paging is listed exactly
    /// once; a cursor not returned by this cache starts from the beginning.
    pub fn scan(&self, pattern: &Glob, cursor: Option<&str>, limit: usize) -> KeyPage {
        let limit = limit.max(1);
        let now = self.inner.clock.now();
        let mut keys = Vec::new();
        let next_cursor = self.walk(pattern, cursor, (limit * 10).max(1000), |key, slot| {
            match slot.value.upgrade() {
                Some(e) if !e.expired(now) => keys.push(KeyInfo {
                    size: e.logical_len as usize,
                    stored_size: e.weight(key),
                    ttl_remaining: e.expires_at.map(|at| at.saturating_duration_since(now)),
                    key: key.clone(),
                }),
                Some(_) => {}
                None => {
                    // Gone from the store without the index knowing: account for it now.
                    self.remove_write(key, slot.generation, Removal::Expired);
                }
            }
            keys.len() < limit
        });
        KeyPage { keys, next_cursor }
    }

    /// Deletes the keys matching `pattern` among the next `batch` keys from `cursor`. Returns
    /// how many live entries were removed and where to continue (`None` when done). Callers
    /// loop, yielding between batches, so a large delete never blocks others for long.
    pub fn delete_matching(
        &self,
        pattern: &Glob,
        cursor: Option<&str>,
        batch: usize,
    ) -> (usize, Option<String>) {
        let mut removed = 0;
        let next_cursor = self.walk(pattern, cursor, batch.max(1), |key, slot| {
            if self.remove_write(key, slot.generation, Removal::Pattern) {
                removed += 1;
            }
            true
        });
        (removed, next_cursor)
    }

    /// Deletes every key matching `pattern`, batch after batch (each batch holds one index
    /// shard's lock at a time, never the whole keyspace). Returns how many live entries went.
    pub fn delete_all_matching(&self, pattern: &Glob) -> usize {
        let mut cursor: Option<String> = None;
        let mut deleted = 0;
        loop {
            let (n, next) = self.delete_matching(pattern, cursor.as_deref(), 1000);
            deleted += n;
            match next {
                Some(next) => cursor = Some(next),
                None => return deleted,
            }
        }
    }

    /// Walks the keys from `cursor`, examining at most `budget` of them, and calls `visit` for
    /// each key matching `pattern` until it returns `false`. Returns the cursor to continue
    /// from, or `None` when no key is left. Only keys starting with the pattern's literal prefix
    /// are examined.
    fn walk(
        &self,
        pattern: &Glob,
        cursor: Option<&str>,
        budget: usize,
        mut visit: impl FnMut(&Arc<str>, Slot) -> bool,
    ) -> Option<String> {
        let from = cursor.map(Position::decode).unwrap_or_default();
        self.inner
            .keys
            .walk(from, pattern.literal_prefix(), budget, |key, slot| {
                !pattern.matches(key) || visit(key, slot)
            })
            .map(|position| position.encode())
    }
}
