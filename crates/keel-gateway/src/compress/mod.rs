//! Response compression: which encoding a client gets (`Accept-Encoding` with q-values and the
//! route's preference), which responses are worth compressing, and the encoders — one-shot for
//! cached responses (compressed once, served to many) and streaming (`stream`) for the rest.

pub(crate) mod stream;

use std::io::Write;

use http::StatusCode;
use http::header::{self, HeaderMap};

use crate::config::{CompressPolicy, GatewayConfigError};

/// A content coding keel produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    pub(crate) fn token(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    fn parse(token: &str) -> Option<Self> {
        match token.trim().to_ascii_lowercase().as_str() {
            "br" => Some(Self::Br),
            "zstd" => Some(Self::Zstd),
            "gzip" | "x-gzip" => Some(Self::Gzip),
            _ => None,
        }
    }
}

/// A route's compression policy, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Compression {
    min_size: u64,
    /// `text/` for `text/*`, else the exact type.
    types: Vec<String>,
    order: Vec<Encoding>,
    gzip_level: u32,
    br_level: u32,
    zstd_level: i32,
}

impl Compression {
    /// Compiles `policy`; `field` names a key for errors. `None` when compression is off.
    pub(crate) fn compile(
        policy: &CompressPolicy,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Option<Self>, GatewayConfigError> {
        if !policy.enabled {
            return Ok(None);
        }
        let err = |f: &str, reason: String| GatewayConfigError::new(field(f), reason);
        let order = policy
            .encodings
            .iter()
            .map(|e| {
                Encoding::parse(e).ok_or_else(|| {
                    err(
                        "compress.encodings",
                        format!("\"{e}\" is not one of br, zstd, gzip"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=9).contains(&policy.gzip_level) {
            return Err(err("compress.gzip_level", "must be 1 to 9".to_owned()));
        }
        if policy.br_level > 11 {
            return Err(err("compress.br_level", "must be 0 to 11".to_owned()));
        }
        if !(1..=19).contains(&policy.zstd_level) {
            return Err(err("compress.zstd_level", "must be 1 to 19".to_owned()));
        }
        let types = policy
            .types
            .iter()
            .map(|t| {
                let t = t.trim().to_ascii_lowercase();
                match t.strip_suffix('*') {
                    Some(prefix) if prefix.ends_with('/') => Ok(prefix.to_owned()),
                    Some(_) => Err(err(
                        "compress.types",
                        format!("\"{t}\": only `type/*` wildcards"),
                    )),
                    None if t.contains('/') => Ok(t),
                    None => Err(err(
                        "compress.types",
                        format!("\"{t}\" is not a type/subtype"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            min_size: policy.min_size.bytes(),
            types,
            order,
            gzip_level: policy.gzip_level,
            br_level: policy.br_level,
            zstd_level: policy.zstd_level,
        }))
    }

    /// The encoding a client with these request headers accepts best, among the route's.
    pub(crate) fn negotiate(&self, request: &HeaderMap) -> Option<Encoding> {
        let mut best: Option<(Encoding, f32)> = None;
        let accepted: Vec<(String, f32)> = request
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';');
                let coding = parts.next()?.trim().to_ascii_lowercase();
                if coding.is_empty() {
                    return None;
                }
                let q = parts
                    .filter_map(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .or_else(|| p.trim().strip_prefix("Q="))
                    })
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((coding, q))
            })
            .collect();
        for &encoding in &self.order {
            let q = accepted
                .iter()
                .find(|(c, _)| Encoding::parse(c) == Some(encoding))
                .or_else(|| accepted.iter().find(|(c, _)| c == "*"))
                .map_or(0.0, |(_, q)| *q);
            // Strictly greater: on equal q the route's order decides.
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((encoding, q));
            }
        }
        best.map(|(e, _)| e)
    }

    /// Whether a response with this status, these headers and (when known) this body length
    /// is worth compressing: not encoded already, not `no-transform`, a listed type, at least
    /// `min_size`.
    pub(crate) fn worth_it(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        len: Option<u64>,
    ) -> bool {
        if matches!(status.as_u16(), 101 | 204 | 206 | 304) || status.is_informational() {
            return false;
        }
        if headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            return false;
        }
        let no_transform = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            });
        if no_transform || len.is_some_and(|len| len < self.min_size) {
            return false;
        }
        let Some(content_type) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        self.types.iter().any(|t| {
            if t.ends_with('/') {
                essence.starts_with(t.as_str())
            } else {
                essence == *t
            }
        })
    }

    /// Compresses a whole body.
    pub(crate) fn compress(&self, encoding: Encoding, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut encoder = self.encoder(encoding)?;
        encoder.write_all(data)?;
        encoder.finish()
    }

    /// A streaming encoder.
    pub(crate) fn encoder(&self, encoding: Encoding) -> std::io::Result<stream::Encoder> {
        stream::Encoder::new(encoding, self.level(encoding))
    }

    fn level(&self, encoding: Encoding) -> i32 {
        match encoding {
            Encoding::Br => self.br_level as i32,
            Encoding::Zstd => self.zstd_level,
            Encoding::Gzip => self.gzip_level as i32,
        }
    }
}

/// Adds `Accept-Encoding` to a response's `Vary` unless it is there already.
pub(crate) fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| {
            let n = n.trim();
            n == "*" || n.eq_ignore_ascii_case("accept-encoding")
        });
    if !present {
        headers.append(
            header::VARY,
            http::HeaderValue::from_static("accept-encoding"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn compression(f: impl FnOnce(&mut CompressPolicy)) -> Compression {
        let mut p = CompressPolicy::default();
        f(&mut p);
        Compression::compile(&p, &|f| f.to_owned())
            .unwrap()
            .unwrap()
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn negotiation_honours_q_values_then_the_route_s_order() {
        let c = compression(|_| {});
        let pick = |v: &str| c.negotiate(&accept(v)).map(Encoding::token);
        assert_eq!(pick("gzip, deflate, br, zstd"), Some("br"));
        assert_eq!(pick("gzip;q=1.0, br;q=0.5"), Some("gzip"));
        assert_eq!(pick("br;q=0, gzip"), Some("gzip"));
        assert_eq!(pick("zstd, gzip"), Some("zstd"));
        assert_eq!(pick("*"), Some("br"));
        assert_eq!(pick("*;q=0.2, gzip;q=0.5"), Some("gzip"));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("deflate"), None);
        assert_eq!(c.negotiate(&HeaderMap::new()), None);
        let gzip_first = compression(|p| p.encodings = vec!["gzip".into(), "br".into()]);
        assert_eq!(
            gzip_first.negotiate(&accept("br, gzip")),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn only_listed_types_of_enough_size_not_yet_encoded_are_worth_it() {
        let c = compression(|_| {});
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let ok = StatusCode::OK;
        let json = headers(&[("content-type", "application/json; charset=utf-8")]);
        assert!(c.worth_it(ok, &json, Some(5000)));
        assert!(c.worth_it(ok, &json, None));
        assert!(!c.worth_it(ok, &json, Some(100)));
        assert!(c.worth_it(ok, &headers(&[("content-type", "text/html")]), None));
        assert!(!c.worth_it(ok, &headers(&[("content-type", "image/png")]), None));
        assert!(!c.worth_it(ok, &headers(&[]), None));
        assert!(!c.worth_it(
            ok,
            &headers(&[("content-type", "text/css"), ("content-encoding", "gzip")]),
            None
        ));
        assert!(!c.worth_it(
            ok,
            &headers(&[
                ("content-type", "text/css"),
                ("cache-control", "public, No-Transform")
            ]),
            None
        ));
        assert!(!c.worth_it(StatusCode::NO_CONTENT, &json, None));
        assert!(!c.worth_it(StatusCode::PARTIAL_CONTENT, &json, None));
    }

    #[test]
    fn bad_policies_name_the_field() {
        let bad = |f: fn(&mut CompressPolicy)| {
            let mut p = CompressPolicy::default();
            f(&mut p);
            Compression::compile(&p, &|f| format!("r.{f}"))
                .unwrap_err()
                .field
        };
        assert_eq!(
            bad(|p| p.encodings = vec!["deflate".into()]),
            "r.compress.encodings"
        );
        assert_eq!(bad(|p| p.gzip_level = 0), "r.compress.gzip_level");
        assert_eq!(bad(|p| p.br_level = 12), "r.compress.br_level");
        assert_eq!(bad(|p| p.zstd_level = 30), "r.compress.zstd_level");
        assert_eq!(bad(|p| p.types = vec!["json".into()]), "r.compress.types");
    }

    #[test]
    fn vary_gains_accept_encoding_once() {
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
        vary_on_accept_encoding(&mut h);
        vary_on_accept_encoding(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["Accept-Language", "accept-encoding"]);
    }
}
