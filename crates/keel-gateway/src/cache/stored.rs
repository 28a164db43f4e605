//! A cached response as bytes in the cache engine, and back.
//!
//! Layout (integers big-endian): version `u8`, status `u16`, stored-at, fresh-until,
//! stale-while-revalidate-until and stale-if-error-until as Unix milliseconds `u64`, the
//! upstream's initial age in seconds `u32`, header count `u16`, then per header a `u16` name
//! length, the name, a `u32` value length and the value, tag count `u16` and per tag a `u16`
//! length and the tag; the body is the rest. Decoding slices
//! the body out of the stored buffer without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const VERSION: u8 = 1;

/// A second value under a response's key: the request headers its `Vary` names, in order.
const VARY_MARKER: u8 = 0xfe;

/// A response as the cache keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) times: Times,
    /// The upstream's cache tags (kept so a revalidated copy keeps them).
    pub(crate) tags: Vec<String>,
}

/// When a stored response was stored and until when it may be served how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    /// When it was stored (or last revalidated), Unix ms.
    pub(crate) stored_at: u64,
    /// Served as a HIT until then.
    pub(crate) fresh_until: u64,
    /// Served as STALE while a refresh runs in the background, until then.
    pub(crate) stale_while_revalidate_until: u64,
    /// Served as STALE when the upstream fails, until then.
    pub(crate) stale_if_error_until: u64,
    /// The `Age` the upstream gave it, in seconds.
    pub(crate) initial_age: u32,
}

/// What a key holds: a response, or the list of request headers that pick the variant.
#[derive(Debug)]
pub(crate) enum Entry {
    Response(Stored),
    Vary(Vec<HeaderName>),
}

impl Stored {
    pub(crate) fn encode(&self) -> Bytes {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(k, v)| 6 + k.as_str().len() + v.len())
            .sum();
        let mut out = BytesMut::with_capacity(1 + 2 + 32 + 4 + 2 + headers_len + self.body.len());
        out.put_u8(VERSION);
        out.put_u16(self.status.as_u16());
        let t = &self.times;
        for ms in [
            t.stored_at,
            t.fresh_until,
            t.stale_while_revalidate_until,
            t.stale_if_error_until,
        ] {
            out.put_u64(ms);
        }
        out.put_u32(t.initial_age);
        out.put_u16(u16::try_from(self.headers.len()).unwrap_or(u16::MAX));
        for (name, value) in self.headers.iter().take(usize::from(u16::MAX)) {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(value.len() as u32);
            out.put_slice(value.as_bytes());
        }
        out.put_u16(u16::try_from(self.tags.len()).unwrap_or(u16::MAX));
        for tag in self.tags.iter().take(usize::from(u16::MAX)) {
            let tag = &tag.as_bytes()[..tag.len().min(usize::from(u16::MAX))];
            out.put_u16(tag.len() as u16);
            out.put_slice(tag);
        }
        out.put_slice(&self.body);
        out.freeze()
    }
}

impl Entry {
    /// A Vary marker naming `headers`.
    pub(crate) fn encode_vary(headers: &[HeaderName]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(VARY_MARKER);
        for name in headers {
            out.put_u16(name.as_str().len() as u16);
            out.put_slice(name.as_str().as_bytes());
        }
        out.freeze()
    }

    /// Decodes what [`Stored::encode`] or [`Entry::encode_vary`] wrote; `None` for anything
    /// else (a value some other writer put under a gateway key is treated as a miss).
    pub(crate) fn decode(mut bytes: Bytes) -> Option<Self> {
        let tag = take_u8(&mut bytes)?;
        if tag == VARY_MARKER {
            let mut names = Vec::new();
            while bytes.has_remaining() {
                let len = usize::from(take_u16(&mut bytes)?);
                names.push(HeaderName::from_bytes(&take(&mut bytes, len)?).ok()?);
            }
            return Some(Self::Vary(names));
        }
        if tag != VERSION {
            return None;
        }
        let status = StatusCode::from_u16(take_u16(&mut bytes)?).ok()?;
        let times = Times {
            stored_at: take_u64(&mut bytes)?,
            fresh_until: take_u64(&mut bytes)?,
            stale_while_revalidate_until: take_u64(&mut bytes)?,
            stale_if_error_until: take_u64(&mut bytes)?,
            initial_age: take_u32(&mut bytes)?,
        };
        let count = usize::from(take_u16(&mut bytes)?);
        // Room for what an answer adds (Age, X-Cache, X-Request-Id, rate-limit and security headers)
        // without growing the map.
        let mut headers = HeaderMap::with_capacity(count + 16);
        for _ in 0..count {
            let len = usize::from(take_u16(&mut bytes)?);
            let name = HeaderName::from_bytes(&take(&mut bytes, len)?).ok()?;
            let len = take_u32(&mut bytes)? as usize;
            let value = HeaderValue::from_maybe_shared(take(&mut bytes, len)?).ok()?;
            headers.append(name, value);
        }
        let count = usize::from(take_u16(&mut bytes)?);
        let mut tags = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(take_u16(&mut bytes)?);
            tags.push(String::from_utf8(take(&mut bytes, len)?.to_vec()).ok()?);
        }
        Some(Self::Response(Stored {
            status,
            headers,
            body: bytes,
            times,
            tags,
        }))
    }
}

fn take(bytes: &mut Bytes, len: usize) -> Option<Bytes> {
    (bytes.remaining() >= len).then(|| bytes.split_to(len))
}

fn take_u8(bytes: &mut Bytes) -> Option<u8> {
    bytes.has_remaining().then(|| bytes.get_u8())
}

fn take_u16(bytes: &mut Bytes) -> Option<u16> {
    (bytes.remaining() >= 2).then(|| bytes.get_u16())
}

fn take_u32(bytes: &mut Bytes) -> Option<u32> {
    (bytes.remaining() >= 4).then(|| bytes.get_u32())
}

fn take_u64(bytes: &mut Bytes) -> Option<u64> {
    (bytes.remaining() >= 8).then(|| bytes.get_u64())
}

#[cfg(test)]
impl Times {
    /// Distinct numbers in every field, for round trips.
    pub(crate) fn sample() -> Self {
        Self {
            stored_at: 1,
            fresh_until: 2,
            stale_while_revalidate_until: 3,
            stale_if_error_until: 4,
            initial_age: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_vary_markers_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let stored = Stored {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"{\"missing\":true}"),
            times: Times::sample(),
            tags: vec!["habits".into(), "user-1".into()],
        };
        let Some(Entry::Response(back)) = Entry::decode(stored.encode()) else {
            panic!("not a response");
        };
        assert_eq!(back.status, stored.status);
        assert_eq!(back.headers, stored.headers);
        assert_eq!(back.body, stored.body);
        assert_eq!(back.times, stored.times);
        assert_eq!(back.tags, stored.tags);

        let names = vec![HeaderName::from_static("accept-language")];
        let Some(Entry::Vary(back)) = Entry::decode(Entry::encode_vary(&names)) else {
            panic!("not a vary marker");
        };
        assert_eq!(back, names);

        assert!(Entry::decode(Bytes::from_static(b"hello")).is_none());
        let truncated = stored.encode().slice(..20);
        assert!(Entry::decode(truncated).is_none());
    }
}
