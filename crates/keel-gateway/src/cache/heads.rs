//! Decoded heads of stored responses, by the write that stored them.
//!
//! A stored response is bytes in the cache engine, and its head (status, headers, times, tags)
//! was decoded on every hit: a header name parsed and a value checked per stored header, 4,300
//! of the 21,000 user-space instructions of a hit on a 14 KB response with eight headers. A
//! write's ETag number is unique to it, so a head decoded once serves every later hit on that
//! write. Bodies are not kept here: each hit slices its body from the engine's bytes, so
//! memory stays bounded by the engine (plus at most [`MAX_HEADS`] heads).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::stored::{Stored, Times};
use crate::routes::ANSWER_HEADERS;

/// Heads kept at most; all are dropped when one more would not fit (entries whose writes are
/// gone are never asked for again, so this is how they leave).
const MAX_HEADS: usize = 4096;

/// A stored response without its body, and where its body starts in the stored bytes.
pub(crate) struct Head {
    status: StatusCode,
    headers: HeaderMap,
    times: Times,
    tags: Vec<String>,
    body_at: usize,
}

impl Head {
    /// The head of `stored`, decoded from bytes of length `len` (its body is their end).
    pub(crate) fn of(stored: &Stored, len: usize) -> Self {
        // A hit's map is a clone of this one, and a clone's entries have no room to spare
        // whatever the size of its table. So the table is sized for the stored headers and
        // those every answer adds (the first added then grows the entries once, to room for
        // all of them); a route that adds more reserves them at once (`answer` in
        // `proxy::cached`): one growth either way, where a larger table (as a decoded map
        // has) made a rate-limited route's hit grow twice.
        let mut headers = HeaderMap::with_capacity(stored.headers.len() + ANSWER_HEADERS);
        for (name, value) in &stored.headers {
            headers.append(name.clone(), value.clone());
        }
        Self {
            status: stored.status,
            headers,
            times: stored.times,
            tags: stored.tags.clone(),
            body_at: len.saturating_sub(stored.body.len()),
        }
    }

    /// The stored response whose encoded form is `bytes`.
    pub(crate) fn stored(&self, bytes: &Bytes) -> Stored {
        Stored {
            status: self.status,
            headers: self.headers.clone(),
            body: bytes.slice(self.body_at.min(bytes.len())..),
            times: self.times,
            tags: self.tags.clone(),
        }
    }
}

/// Heads by the ETag number of the write that stored them.
#[derive(Default)]
pub(crate) struct Heads(Mutex<HashMap<u64, Arc<Head>>>);

impl Heads {
    pub(crate) fn get(&self, etag: u64) -> Option<Arc<Head>> {
        self.lock().get(&etag).cloned()
    }

    pub(crate) fn put(&self, etag: u64, head: Head) {
        let mut heads = self.lock();
        if heads.len() >= MAX_HEADS {
            heads.clear();
        }
        heads.insert(etag, Arc::new(head));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Head>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
