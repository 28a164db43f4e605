//! `X-Request-Id`: the client's, when it sent a sensible one, else a new one — unique within
//! the process and unlikely to repeat across instances (a random prefix per process).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};

/// The header's name.
pub(crate) static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// Makes request ids: a random 32-bit prefix and a counter, 24 hex digits.
pub(crate) struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        // `RandomState` is seeded from the OS: a random prefix without another dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(0);
        Self {
            prefix: hasher.finish() as u32,
            next: AtomicU64::new(1),
        }
    }

    /// The request's id: the client's `X-Request-Id` if it is 1–128 visible ASCII characters,
    /// else a new one.
    pub(crate) fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(given) = headers.get(&X_REQUEST_ID)
            && (1..=MAX_LEN).contains(&given.len())
            && given.as_bytes().iter().all(|b| b.is_ascii_graphic())
        {
            return given.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Hex digits written by hand: this runs for every request.
        let mut id = [0u8; 24];
        let digits = (u128::from(self.prefix) << 64) | u128::from(n);
        for (i, byte) in id.iter_mut().enumerate() {
            let nibble = (digits >> (4 * (23 - i))) as u8 & 0xf;
            *byte = b"0123456789abcdef"[usize::from(nibble)];
        }
        HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sensible_client_ids_and_replaces_others() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        let a = ids.for_request(&h);
        let b = ids.for_request(&h);
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert_eq!(&a.to_str().unwrap()[..8], format!("{:08x}", ids.prefix));
        assert_eq!(&a.to_str().unwrap()[8..], "0000000000000001");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("req-42"));
        assert_eq!(ids.for_request(&h), "req-42");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(ids.for_request(&h), "has space");
        h.insert(
            &X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        assert_eq!(ids.for_request(&h).len(), 24);
    }
}
