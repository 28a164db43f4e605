//! One cached value, as stored: possibly compressed, with its metadata.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

/// Bytes charged per entry on top of key and value, so `max_memory` bounds what the process
/// really holds: moka's per-entry structures, this entry and its `Arc`, the key index's slot,
/// allocator rounding — and, under churn, the index slots of evicted keys the sweep has not
/// reached yet. Calibrated with `cargo bench -p keel-cache --bench memory` in both modes (RSS
/// per small entry, and RSS after writing 3 × `max_memory`; see docs/benchmarks.md).
pub(crate) const ENTRY_OVERHEAD: usize = 680;

/// A stored value. Cloned on every read (the memory tier hands out clones), so the fields a read
/// needs sit inline and the rarely used ones behind one optional `Arc`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The stored bytes: the value, or its LZ4 block (with the length prepended).
    pub(crate) data: Bytes,
    /// When the entry stops being served, by the cache's clock.
    pub(crate) expires_at: Option<Instant>,
    /// A number unique to this write, so removals triggered for an old value never touch a newer
    /// value under the same key.
    pub(crate) generation: u64,
    /// The value's length before compression (values are limited well below 4 GiB).
    pub(crate) logical_len: u32,
    /// Whether `data` is compressed.
    pub(crate) compressed: bool,
    /// Content type and tags, when the write had any.
    pub(crate) meta: Option<Arc<Meta>>,
}

/// What a write may carry besides its value.
#[derive(Debug)]
pub struct Meta {
    /// Shared, so a response can carry it without copying.
    pub(crate) content_type: Option<Bytes>,
    pub(crate) tags: Box<[Arc<str>]>,
}

impl Entry {
    /// Bytes this entry is charged against `max_memory`.
    pub(crate) fn weight(&self, key: &str) -> usize {
        key.len()
            + self.data.len()
            + ENTRY_OVERHEAD
            + self.meta.as_ref().map_or(0, |m| {
                32 + m.content_type.as_ref().map_or(0, |c| c.len())
                    + m.tags.iter().map(|t| t.len() + 48).sum::<usize>()
            })
    }

    /// Bytes the caller stored (key + value before compression).
    pub(crate) fn logical(&self, key: &str) -> usize {
        key.len() + self.logical_len as usize
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

/// A random number per cache, from the standard library's per-process hash seed.
pub(crate) fn random_salt() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u64)
}

/// The ETag of the write `generation`: a bijective mix (SplitMix64's finaliser) of the salted
/// generation, so distinct writes of one cache never share an ETag.
pub(crate) fn etag(salt: u64, generation: u64) -> u64 {
    let mut z = generation ^ salt;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small uncompressed entry with the given generation.
    pub(crate) fn entry(generation: u64) -> Entry {
        Entry {
            data: Bytes::from_static(b"v"),
            expires_at: None,
            generation,
            logical_len: 1,
            compressed: false,
            meta: None,
        }
    }
}
