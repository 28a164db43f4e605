//! What can go wrong when using the cache.

/// A refused cache operation. Every variant is the caller's mistake; each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The key is empty, too long, or contains control characters.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A tag is empty, too long, or contains a comma or control characters.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The tag.
        tag: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The value is larger than `cache.max_value_size`.
    #[error("value of {size} bytes exceeds cache.max_value_size ({max} bytes)")]
    ValueTooLarge {
        /// The value's size.
        size: usize,
        /// The limit.
        max: u64,
    },
    /// One entry of a bulk write is invalid; nothing was written.
    #[error("entry {index}: {source}")]
    InBatch {
        /// The entry's position in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<CacheError>,
    },
}

/// Why [`Cache::get_or_load`](crate::Cache::get_or_load) produced no value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError<E> {
    /// The loader failed (its error is shared by every caller waiting on the same load).
    #[error("loader failed: {0}")]
    Loader(std::sync::Arc<E>),
    /// An earlier load of this key failed within its negative-caching TTL.
    #[error("an earlier load failed and is cached: {0}")]
    NegativeCached(String),
    /// The key or the loaded value was refused.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest tag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// Checks a key: 1–512 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() {
        return Err(CacheError::InvalidKey("must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CacheError::InvalidKey(format!(
            "{} bytes is longer than the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    // Printable ASCII, the common case, needs no decoding.
    // (Folded without short-circuit so the loop vectorises.)
    if !key
        .bytes()
        .fold(false, |bad, b| bad | (b.wrapping_sub(0x20) >= 0x5f))
    {
        return Ok(());
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(CacheError::InvalidKey(format!(
            "contains the control character {c:?}"
        )));
    }
    Ok(())
}

/// Checks a tag: 1–256 bytes, no comma, no control characters.
pub fn validate_tag(tag: &str) -> Result<(), CacheError> {
    let reason = if tag.is_empty() {
        "must not be empty"
    } else if tag.len() > MAX_TAG_BYTES {
        "is longer than 256 bytes"
    } else if tag.contains(',') {
        "must not contain a comma"
    } else if tag.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(CacheError::InvalidTag {
        tag: tag.to_owned(),
        reason,
    })
}
