//! `Cache-Control` and friends, read as a shared cache reads them (RFC 9111).

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};

/// The directives of a response's `Cache-Control` that matter to a shared cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) no_transform: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

impl ResponseDirectives {
    /// Parses every `Cache-Control` header of `headers`. Unknown directives are ignored; a
    /// malformed number makes its directive count as absent, except `max-age`/`s-maxage`, which
    /// then count as 0 (stale at once), as RFC 9111 §4.2.1 asks.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || {
                    arg.and_then(|a| a.parse::<u64>().ok())
                        .map(Duration::from_secs)
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => d.no_store = true,
                    // `no-cache="field"` only restricts fields; treated as the plain form.
                    "no-cache" => d.no_cache = true,
                    "private" => d.private = true,
                    "public" => d.public = true,
                    "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                    "no-transform" => d.no_transform = true,
                    "max-age" => d.max_age = Some(seconds().unwrap_or_default()),
                    "s-maxage" => d.s_maxage = Some(seconds().unwrap_or_default()),
                    "stale-while-revalidate" => d.stale_while_revalidate = seconds(),
                    "stale-if-error" => d.stale_if_error = seconds(),
                    _ => {}
                }
            }
        }
        d
    }

    /// How long the response is fresh for a shared cache, from its own headers: `s-maxage`,
    /// else `max-age`, else `Expires` − `Date`. `None` when it says nothing.
    pub(crate) fn freshness(&self, headers: &HeaderMap) -> Option<Duration> {
        if let Some(s) = self.s_maxage.or(self.max_age) {
            return Some(s);
        }
        let expires = headers.get(header::EXPIRES)?;
        // An invalid Expires (e.g. "0") means already expired.
        let Some(expires) = http_date(expires.as_bytes()) else {
            return Some(Duration::ZERO);
        };
        let date = headers
            .get(header::DATE)
            .and_then(|d| http_date(d.as_bytes()))
            .unwrap_or_else(SystemTime::now);
        Some(expires.duration_since(date).unwrap_or_default())
    }
}

/// The upstream's `Age` header, in seconds.
pub(crate) fn age(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_default()
}

/// Parses an HTTP date (IMF-fixdate and the two obsolete forms).
pub(crate) fn http_date(value: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn directives_and_freshness() {
        let secs = Duration::from_secs;
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Headers, Option<Duration>)] = &[
            (&[("cache-control", "max-age=60")], Some(secs(60))),
            (
                &[("cache-control", "max-age=60, s-maxage=5")],
                Some(secs(5)),
            ),
            (&[("cache-control", "S-MAXAGE=\"7\"")], Some(secs(7))),
            (&[("cache-control", "max-age=abc")], Some(secs(0))),
            (&[("cache-control", "public")], None),
            (
                &[
                    ("date", "Sun, 22 Nov 2026 10:00:00 GMT"),
                    ("expires", "Sun, 22 Nov 2026 10:02:00 GMT"),
                ],
                Some(secs(120)),
            ),
            (&[("expires", "0")], Some(secs(0))),
            (
                &[
                    ("cache-control", "max-age=10"),
                    ("expires", "Sun, 22 Nov 2026 10:02:00 GMT"),
                ],
                Some(secs(10)),
            ),
            (&[], None),
        ];
        for (pairs, fresh) in cases {
            let h = headers(pairs);
            assert_eq!(
                ResponseDirectives::parse(&h).freshness(&h),
                *fresh,
                "{pairs:?}"
            );
        }
        let h = headers(&[
            ("cache-control", "private, no-cache"),
            ("cache-control", "no-store, must-revalidate, no-transform"),
            (
                "cache-control",
                "stale-while-revalidate=30, stale-if-error=600, public",
            ),
        ]);
        let d = ResponseDirectives::parse(&h);
        assert!(d.private && d.no_cache && d.no_store && d.must_revalidate && d.no_transform);
        assert!(d.public);
        assert_eq!(d.stale_while_revalidate, Some(secs(30)));
        assert_eq!(d.stale_if_error, Some(secs(600)));
        assert_eq!(age(&headers(&[("age", "12")])), secs(12));
        assert_eq!(age(&headers(&[("age", "x")])), secs(0));
    }
}
