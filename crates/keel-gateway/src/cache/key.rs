//! Cache keys: `gw:` + path + canonical query, then the parts a route adds (headers, a cookie,
//! the credential), then — for a response that varies — the values of the headers it varies on.
//!
//! Parts are separated by a space, which a request target cannot contain, so a purge glob on the
//! path (`gw:/api/habits*`) also reaches every variant. Keys over the cache's 512-byte limit keep
//! a readable head and end in a SHA-256 of the whole.

use http::Uri;
use http::header::{self, HeaderMap, HeaderName};
use keel_cache::MAX_KEY_BYTES;
use sha2::{Digest, Sha256};

use crate::config::CachePolicy;

/// Every gateway key starts with this, apart from the API cache's keys.
pub(crate) const PREFIX: &str = "gw:";

/// Bytes of a long key kept readable before its hash.
const READABLE_HEAD: usize = 400;

/// What a route puts in its keys, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyTemplate {
    query_only: Vec<String>,
    query_ignore: Vec<String>,
    headers: Vec<HeaderName>,
    cookie: Option<String>,
    user: bool,
}

impl KeyTemplate {
    pub(crate) fn new(policy: &CachePolicy) -> Result<Self, String> {
        let headers = policy
            .key_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("\"{h}\" is not a header name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            query_only: policy.key_query.clone(),
            query_ignore: policy.key_query_ignore.clone(),
            headers,
            cookie: policy.key_cookie.clone(),
            user: policy.key_user,
        })
    }

    /// Whether keys carry the credential.
    pub(crate) fn per_user(&self) -> bool {
        self.user
    }

    /// The key of a request, before any `Vary`.
    pub(crate) fn primary(&self, uri: &Uri, headers: &HeaderMap) -> String {
        let mut key = String::with_capacity(64);
        key.push_str(PREFIX);
        key.push_str(uri.path());
        if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
            let mut pairs: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .filter(|pair| {
                    let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
                    (self.query_only.is_empty() || self.query_only.iter().any(|q| q == name))
                        && !self.query_ignore.iter().any(|q| q == name)
                })
                .collect();
            if !pairs.is_empty() {
                // Stable, so repeated names keep their relative order (`a=1&a=2` ≠ `a=2&a=1`).
                pairs.sort_by_key(|pair| pair.split_once('=').map_or(*pair, |(n, _)| n));
                key.push('?');
                key.push_str(&pairs.join("&"));
            }
        }
        for name in &self.headers {
            key.push_str(" h:");
            key.push_str(name.as_str());
            key.push('=');
            push_values(&mut key, headers, name);
        }
        if let Some(cookie) = &self.cookie {
            key.push_str(" c:");
            if let Some(value) = cookie_value(headers, cookie) {
                push_escaped(&mut key, value.as_bytes());
            }
        }
        if self.user {
            key.push_str(" u:");
            if let Some(auth) = headers.get(header::AUTHORIZATION) {
                let digest = Sha256::digest(auth.as_bytes());
                key.push_str(&hex(&digest[..16]));
            }
        }
        bounded(key)
    }
}

/// The key of one variant of a response that varies on `vary`.
pub(crate) fn variant(primary: &str, vary: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    for name in vary {
        key.push_str(" v:");
        key.push_str(name.as_str());
        key.push('=');
        push_values(&mut key, headers, name);
    }
    bounded(key)
}

fn push_values(key: &mut String, headers: &HeaderMap, name: &HeaderName) {
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            key.push(',');
        }
        push_escaped(key, value.as_bytes());
    }
}

/// Visible ASCII as is; anything else (spaces, control characters, non-ASCII) percent-encoded,
/// so a value can neither end its part early nor make an invalid key.
fn push_escaped(key: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v)
        })
}

fn bounded(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut head = READABLE_HEAD;
    while !key.is_char_boundary(head) {
        head -= 1;
    }
    let digest = Sha256::digest(key.as_bytes());
    format!("{} #{}", &key[..head], hex(&digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn template(f: impl FnOnce(&mut CachePolicy)) -> KeyTemplate {
        let mut p = CachePolicy::default();
        f(&mut p);
        KeyTemplate::new(&p).unwrap()
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn query_parameters_are_sorted_and_filtered() {
        let h = HeaderMap::new();
        let t = template(|_| {});
        assert_eq!(t.primary(&uri("/a?b=2&a=1&a=0"), &h), "gw:/a?a=1&a=0&b=2");
        assert_eq!(t.primary(&uri("/a?"), &h), "gw:/a");
        let t = template(|p| p.key_query_ignore = vec!["utm_source".into()]);
        assert_eq!(t.primary(&uri("/a?utm_source=x&id=3"), &h), "gw:/a?id=3");
        assert_eq!(t.primary(&uri("/a?utm_source=x"), &h), "gw:/a");
        let t = template(|p| p.key_query = vec!["page".into()]);
        assert_eq!(t.primary(&uri("/a?sort=x&page=2"), &h), "gw:/a?page=2");
    }

    #[test]
    fn headers_cookie_and_user_make_their_own_parts() {
        let mut h = HeaderMap::new();
        h.insert("accept-language", HeaderValue::from_static("de DE"));
        h.insert(header::COOKIE, HeaderValue::from_static("sid=1; ab=blue"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer alice"),
        );
        let t = template(|p| {
            p.key_headers = vec!["Accept-Language".into()];
            p.key_cookie = Some("ab".into());
            p.key_user = true;
        });
        let key = t.primary(&uri("/x"), &h);
        assert!(
            key.starts_with("gw:/x h:accept-language=de%20DE c:blue u:"),
            "{key}"
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bob"),
        );
        assert_ne!(
            t.primary(&uri("/x"), &h),
            key,
            "another credential, another key"
        );
        assert!(!key.contains("alice"));
    }

    #[test]
    fn long_keys_keep_a_readable_head_and_fit_the_limit() {
        let path = format!("/{}", "p".repeat(1000));
        let key = template(|_| {}).primary(&uri(&path), &HeaderMap::new());
        assert!(key.len() <= MAX_KEY_BYTES);
        assert!(key.starts_with("gw:/ppp"));
        let other = template(|_| {}).primary(&uri(&format!("{path}q")), &HeaderMap::new());
        assert_ne!(key, other);
        keel_cache::validate_key(&key).unwrap();
    }

    #[test]
    fn variants_append_the_varying_headers() {
        let mut h = HeaderMap::new();
        h.insert("accept-language", HeaderValue::from_static("fr"));
        let vary = [
            HeaderName::from_static("accept-language"),
            HeaderName::from_static("x-none"),
        ];
        assert_eq!(
            variant("gw:/a", &vary, &h),
            "gw:/a v:accept-language=fr v:x-none="
        );
    }
}
