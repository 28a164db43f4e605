//! One cached value, as stored: possibly compressed, with its metadata.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes charged per entry on top of key and value: moka's node and our entry struct, the key
/// index node and the tag bookkeeping. Calibrated by `benches/engine.rs` (RSS per entry).
pub(crate) const ENTRY_OVERHEAD: usize = 160;

/// A stored value.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The stored bytes: the value, or its LZ4 block (with the length prepended).
    pub(crate) data: Bytes,
    /// Whether `data` is compressed.
    pub(crate) compressed: bool,
    /// The value's length before compression.
    pub(crate) logical_len: usize,
    /// The content type given at set time.
    pub(crate) content_type: Option<Arc<str>>,
    /// When the entry stops being served, by the cache's clock.
    pub(crate) expires_at: Option<Instant>,
    /// The TTL it was set with.
    pub(crate) ttl: Option<Duration>,
    /// Tags the entry can be invalidated by.
    pub(crate) tags: Box<[Arc<str>]>,
    /// A hash of the value, for ETags.
    pub(crate) etag: u64,
    /// A number unique to this write, so removals triggered for an old value never touch a newer
    /// value under the same key.
    pub(crate) generation: u64,
}

impl Entry {
    /// Bytes this entry is charged against `max_memory`.
    pub(crate) fn weight(&self, key: &str) -> usize {
        key.len()
            + self.data.len()
            + ENTRY_OVERHEAD
            + self.content_type.as_ref().map_or(0, |c| c.len())
            + self.tags.iter().map(|t| t.len() + 16).sum::<usize>()
    }

    /// Bytes the caller stored (key + value before compression).
    pub(crate) fn logical(&self, key: &str) -> usize {
        key.len() + self.logical_len
    }

    /// Whether the entry has expired at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The value, decompressed.
    pub(crate) fn value(&self) -> Bytes {
        if !self.compressed {
            return self.data.clone();
        }
        // We produced this block ourselves, so it always decompresses.
        lz4_flex::decompress_size_prepended(&self.data)
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// Compresses `value` when it is at least `min` bytes and compression saves space.
pub(crate) fn maybe_compress(value: Bytes, min: usize) -> (Bytes, bool) {
    if value.len() < min.max(1) {
        return (value, false);
    }
    let packed = lz4_flex::compress_prepend_size(&value);
    if packed.len() < value.len() {
        (Bytes::from(packed), true)
    } else {
        (value, false)
    }
}

/// A cheap content hash for ETags.
pub(crate) fn content_hash(value: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}
