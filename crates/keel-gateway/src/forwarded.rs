//! Headers a proxy must rewrite: hop-by-hop headers go, `X-Forwarded-*` are added, and the
//! client's address is learned from `X-Forwarded-For` only when the peer is a trusted proxy.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::config::GatewayConfigError;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), so a proxy drops
/// them: plus whatever `Connection` names, and `Upgrade` (see [`strip_hop_by_hop`]).
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ]
}

/// Removes hop-by-hop headers, and `Upgrade` unless the message is an upgrade being passed
/// through (then `Connection: upgrade` and `Upgrade` are set again by the caller).
///
/// One pass over the headers present (a message rarely has more than a few, and comparing a
/// standard name is an integer comparison) instead of a hash lookup per hop-by-hop name: most
/// messages carry none or one of them, and this runs twice per proxied request. The names found
/// are noted as bits, so the common case (`Connection: keep-alive` on a response) allocates
/// nothing; only a `Connection` naming some other header makes a list.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let list = hop_by_hop();
    let mut found = 0u16;
    let mut named: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if let Some(i) = list.iter().position(|h| *h == name) {
            found |= 1 << i;
        }
        if name == header::CONNECTION {
            // Names listed in `Connection` are hop-by-hop too. The usual options name no
            // header (`close`) or one removed anyway (`keep-alive`, `upgrade`).
            let tokens = value.to_str().unwrap_or_default().split(',').map(str::trim);
            for token in tokens {
                let usual = ["close", "keep-alive", "upgrade", ""]
                    .iter()
                    .any(|u| token.eq_ignore_ascii_case(u));
                if !usual && let Ok(listed) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(listed);
                }
            }
        }
    }
    for (i, name) in list.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    for name in named {
        headers.remove(name);
    }
}

/// Peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`, `::1`) and ranges (`10.0.0.0/8`).
    pub(crate) fn parse(entries: &[String]) -> Result<Self, GatewayConfigError> {
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        GatewayConfigError::new(
                            format!("gateway.trusted_proxies[{i}]"),
                            format!("\"{entry}\" is neither an IP address nor a CIDR range"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, unless the peer is trusted, then the right-most
    /// address in `X-Forwarded-For` that is not itself a trusted proxy (the left-most entries
    /// are whatever the client claimed).
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let chain = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in chain.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }

    /// Sets `X-Forwarded-For`, `-Proto` and `-Host` on a request going upstream. From a trusted
    /// peer the existing chain is extended and its `-Proto`/`-Host` kept; from anyone else they
    /// are replaced, so an app behind keel can believe them.
    /// `peer_value` is the peer's address as a header value (made once per connection).
    pub(crate) fn set_forwarded(
        &self,
        peer: IpAddr,
        peer_value: &HeaderValue,
        host: Option<HeaderValue>,
        headers: &mut HeaderMap,
    ) {
        let peer = canonical(peer);
        let trusted = !self.0.is_empty() && self.trusts(peer);
        let earlier: Vec<&str> = if trusted {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        } else {
            Vec::new()
        };
        let chain = if earlier.is_empty() {
            peer_value.clone()
        } else {
            let chain = format!(
                "{}, {}",
                earlier.join(", "),
                peer_value.to_str().unwrap_or_default()
            );
            HeaderValue::from_str(&chain).unwrap_or_else(|_| peer_value.clone())
        };
        headers.insert(X_FORWARDED_FOR.clone(), chain);
        if !trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        if !trusted || !headers.contains_key(&X_FORWARDED_HOST) {
            match host {
                Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
                None => headers.remove(&X_FORWARDED_HOST),
            };
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket reports) as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let t = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        let h = xff("6.6.6.6, 1.2.3.4, 10.0.0.7");
        assert_eq!(t.client_ip(ip("192.168.1.1"), &h), ip("1.2.3.4"));
        assert_eq!(t.client_ip(ip("8.8.8.8"), &h), ip("8.8.8.8"));
        assert_eq!(proxies(&[]).client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        // Every hop trusted: the left-most is the client.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff("10.1.1.1")),
            ip("10.1.1.1")
        );
        // Garbage ends the walk at the last good address.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff("junk, 10.2.2.2")),
            ip("10.2.2.2")
        );
        assert_eq!(
            t.client_ip(ip("::ffff:10.0.0.1"), &xff("1.2.3.4")),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn forwarded_headers_are_replaced_for_untrusted_peers() {
        let t = proxies(&["10.0.0.0/8"]);
        let host = Some(HeaderValue::from_static("shop.example"));
        let mut h = xff("6.6.6.6");
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        t.set_forwarded(
            ip("8.8.8.8"),
            &HeaderValue::from_static("8.8.8.8"),
            host.clone(),
            &mut h,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "8.8.8.8");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");

        let mut h = xff("1.2.3.4");
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        t.set_forwarded(
            ip("10.0.0.9"),
            &HeaderValue::from_static("10.0.0.9"),
            host,
            &mut h,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn hop_by_hop_headers_go_with_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));

        // Options in any case, over several `Connection` headers.
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Close"));
        h.append(header::CONNECTION, HeaderValue::from_static(" X-Other ,"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ETAG, HeaderValue::from_static("\"1\""));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::ETAG]);

        // Nothing hop-by-hop: nothing changes.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn bad_trusted_proxy_entries_are_named() {
        let e = TrustedProxies::parse(&["10.0.0.0/8".into(), "ten".into()]).unwrap_err();
        assert_eq!(e.field, "gateway.trusted_proxies[1]");
    }
}
