//! A route's rate limit: which budget a request spends (client address, a header, the verified
//! user, or the route), who bypasses it, and the headers that tell clients where they stand.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::Ipv6Net;
use keel_auth::{Authenticator, Principal, Role};
use keel_redis::{Limiter, Limits};
use keel_resilience::{Decision, Quota};

use crate::config::{GatewayConfigError, RateLimitPolicy};

/// How many headers a limited route's responses carry (see [`RouteLimiter::set_headers`]).
pub(crate) const HEADERS: usize = 5;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// What a budget belongs to.
#[derive(Debug)]
enum LimitKey {
    Ip,
    Header(HeaderName),
    User,
    Route,
}

/// A compiled rate limit, shared by the routes it applies to.
pub(crate) struct RouteLimiter {
    /// The policy's name in `RateLimit-Policy`/`RateLimit` (the rule's name, or `default`).
    pub(crate) name: String,
    limiter: Limiter,
    key: LimitKey,
    ipv6_prefix: u8,
    bypass_roles: Vec<Role>,
    bypass_subjects: Vec<String>,
    /// `RateLimit-Policy` and `X-RateLimit-Limit`, the same for every response.
    policy_header: HeaderValue,
    limit_header: HeaderValue,
    /// The last varying headers sent, reused while the numbers stay the same (they do for
    /// clients far below the limit, the common case): formatting them is most of what a
    /// limited route costs per request.
    last: Mutex<Option<VaryingHeaders>>,
}

/// `RateLimit`, `X-RateLimit-Remaining` and `-Reset` for one (remaining, reset) pair.
struct VaryingHeaders {
    remaining: u32,
    reset: u64,
    rate_limit: Option<HeaderValue>,
    x_remaining: HeaderValue,
    x_reset: HeaderValue,
}

impl std::fmt::Debug for RouteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("name", &self.name)
            .field("quota", &self.limiter.quota())
            .field("key", &self.key)
            .finish()
    }
}

impl VaryingHeaders {
    /// The three values (a reference-count increment each).
    fn clone_values(&self) -> (Option<HeaderValue>, HeaderValue, HeaderValue) {
        (
            self.rate_limit.clone(),
            self.x_remaining.clone(),
            self.x_reset.clone(),
        )
    }
}

/// The outcome for one request: `None` when it bypasses the limit.
pub(crate) type Checked = Option<Decision>;

impl RouteLimiter {
    pub(crate) fn compile(
        name: &str,
        policy: &RateLimitPolicy,
        limits: &Limits,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Self, GatewayConfigError> {
        let err = |f: &str, reason: String| GatewayConfigError::new(field(f), reason);
        if policy.rate == 0 {
            return Err(err("rate_limit.rate", "must be at least 1".to_owned()));
        }
        if policy.per.get().is_zero() {
            return Err(err("rate_limit.per", "must be greater than 0".to_owned()));
        }
        if policy.burst == Some(0) {
            return Err(err(
                "rate_limit.burst",
                "must be at least 1 (leave it out for `rate`)".to_owned(),
            ));
        }
        if policy.ipv6_prefix > 128 {
            return Err(err("rate_limit.ipv6_prefix", "must be 0 to 128".to_owned()));
        }
        let key = match policy.key.as_str() {
            "ip" => LimitKey::Ip,
            "user" => LimitKey::User,
            "route" => LimitKey::Route,
            other => match other.strip_prefix("header:") {
                Some(h) => {
                    LimitKey::Header(HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| {
                        err("rate_limit.key", format!("\"{h}\" is not a header name"))
                    })?)
                }
                None => {
                    return Err(err(
                        "rate_limit.key",
                        format!("\"{other}\" is not one of ip, header:<name>, user, route"),
                    ));
                }
            },
        };
        let bypass_roles = policy
            .bypass_roles
            .iter()
            .map(|r| {
                r.parse::<Role>().map_err(|_| {
                    err(
                        "rate_limit.bypass_roles",
                        format!("\"{r}\" is not one of viewer, worker, admin"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let quota = Quota {
            max: policy.rate,
            per: policy.per.get(),
            burst: policy.burst.unwrap_or(policy.rate),
        };
        let window = policy.per.get().as_secs().max(1);
        let policy_header =
            HeaderValue::from_str(&format!("\"{name}\";q={};w={window}", policy.rate)).map_err(
                |_| {
                    err(
                        "name",
                        "must be printable ASCII to name a rate limit policy".to_owned(),
                    )
                },
            )?;
        Ok(Self {
            name: name.to_owned(),
            // Shared budgets are per rule: `gw:<rule name>`.
            limiter: limits.limiter(&format!("gw:{name}"), quota),
            key,
            ipv6_prefix: policy.ipv6_prefix,
            bypass_roles,
            bypass_subjects: policy.bypass_subjects.clone(),
            policy_header,
            limit_header: HeaderValue::from(quota.burst),
            last: Mutex::new(None),
        })
    }

    /// Spends one request of the right budget; `None` when the request bypasses the limit.
    pub(crate) async fn check(
        &self,
        client: IpAddr,
        headers: &HeaderMap,
        auth: &[std::sync::Arc<Authenticator>],
    ) -> Checked {
        let needs_principal = matches!(self.key, LimitKey::User)
            || !self.bypass_roles.is_empty()
            || !self.bypass_subjects.is_empty();
        let principal = if needs_principal {
            principal(headers, auth)
        } else {
            None
        };
        if let Some(p) = &principal
            && (self.bypass_roles.contains(&p.role)
                || self.bypass_subjects.iter().any(|s| **s == *p.subject))
        {
            return None;
        }
        if let LimitKey::Ip = self.key
            && let IpAddr::V4(v4) = client
        {
            // The common case, without allocating: the address's text on the stack.
            let mut buf = [0u8; 15];
            let key = ipv4_text(v4, &mut buf);
            return Some(self.limiter.check(key, 1).await);
        }
        let key = match &self.key {
            LimitKey::Route => String::new(),
            LimitKey::Ip => self.ip_key(client),
            LimitKey::Header(name) => match headers.get(name) {
                // A separate space from addresses, so a header value cannot take an address's budget.
                Some(v) => format!("h:{}", String::from_utf8_lossy(v.as_bytes())),
                None => self.ip_key(client),
            },
            LimitKey::User => match &principal {
                Some(p) => format!("u:{}", p.subject),
                None => self.ip_key(client),
            },
        };
        Some(self.limiter.check(&key, 1).await)
    }

    /// The client's address, IPv6 grouped by the configured prefix.
    fn ip_key(&self, client: IpAddr) -> String {
        match client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => Ipv6Net::new(v6, self.ipv6_prefix)
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| v6.to_string()),
        }
    }

    /// `RateLimit-Policy`, `RateLimit` (IETF httpapi draft), `X-RateLimit-Limit`,
    /// `-Remaining` and `-Reset`: [`HEADERS`].
    pub(crate) fn set_headers(&self, headers: &mut HeaderMap, decision: &Decision) {
        let (remaining, reset) = (decision.remaining, seconds_up(decision.reset_after));
        headers.insert(RATELIMIT_POLICY.clone(), self.policy_header.clone());
        headers.insert(X_LIMIT.clone(), self.limit_header.clone());
        // Never waits: a writer holding the memo means formatting afresh.
        let mut memo = self.last.try_lock().ok();
        let reuse = memo
            .as_deref()
            .and_then(Option::as_ref)
            .filter(|v| v.remaining == remaining && v.reset == reset);
        let varying = match reuse {
            Some(v) => v.clone_values(),
            None => {
                let fresh = self.format(remaining, reset);
                let values = fresh.clone_values();
                if let Some(memo) = memo.as_deref_mut() {
                    *memo = Some(fresh);
                }
                values
            }
        };
        drop(memo);
        let (rate_limit, x_remaining, x_reset) = varying;
        if let Some(v) = rate_limit {
            headers.insert(RATELIMIT.clone(), v);
        }
        headers.insert(X_REMAINING.clone(), x_remaining);
        headers.insert(X_RESET.clone(), x_reset);
    }

    fn format(&self, remaining: u32, reset: u64) -> VaryingHeaders {
        let mut rate_limit = String::with_capacity(self.name.len() + 32);
        let _ = std::fmt::Write::write_fmt(
            &mut rate_limit,
            format_args!("\"{}\";r={remaining};t={reset}", self.name),
        );
        VaryingHeaders {
            remaining,
            reset,
            rate_limit: HeaderValue::from_str(&rate_limit).ok(),
            x_remaining: HeaderValue::from(remaining),
            x_reset: HeaderValue::from(reset),
        }
    }

    /// Forgets keys back at a full budget; returns how many are left.
    pub(crate) fn forget_idle(&self) -> usize {
        self.limiter.forget_idle()
    }
}

/// `address` in dotted decimal, written into `buf` (what `Display` prints, without the
/// formatting machinery, which costs more than the rate limit decision itself).
fn ipv4_text(address: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> &str {
    let mut len = 0;
    for (i, octet) in address.octets().into_iter().enumerate() {
        if i > 0 {
            buf[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            buf[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            buf[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        buf[len] = b'0' + octet % 10;
        len += 1;
    }
    // Only ASCII digits and dots were written.
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// The credential's principal, by the first verifier that accepts it (the app's JWTs, then
/// keel's own credentials).
fn principal(headers: &HeaderMap, auth: &[std::sync::Arc<Authenticator>]) -> Option<Principal> {
    let header = headers.get(http::header::AUTHORIZATION)?;
    auth.iter()
        .find_map(|a| a.authenticate(Some(header.as_bytes())).ok())
}

/// Whole seconds, rounded up.
pub(crate) fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(f: impl FnOnce(&mut RateLimitPolicy)) -> (RouteLimiter, keel_core::MockClock) {
        let mut p = RateLimitPolicy {
            rate: 2,
            per: keel_core::HumanDuration::from_secs(10),
            ..RateLimitPolicy::default()
        };
        f(&mut p);
        let (clock, time) = keel_core::Clock::mock();
        (
            RouteLimiter::compile("api", &p, &Limits::Local(clock), &|f| f.to_owned()).unwrap(),
            time,
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn ipv6_clients_share_a_budget_per_prefix() {
        let (l, _) = limiter(|_| {});
        let h = HeaderMap::new();
        assert!(l.check(ip("2001:db8::1"), &h, &[]).await.unwrap().allowed);
        assert!(
            l.check(ip("2001:db8::ffff"), &h, &[])
                .await
                .unwrap()
                .allowed
        );
        assert!(
            !l.check(ip("2001:db8::2"), &h, &[]).await.unwrap().allowed,
            "same /64"
        );
        assert!(
            l.check(ip("2001:db8:0:1::1"), &h, &[])
                .await
                .unwrap()
                .allowed,
            "another /64"
        );
        assert!(l.check(ip("10.0.0.1"), &h, &[]).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn a_header_key_falls_back_to_the_address() {
        let (l, _) = limiter(|p| p.key = "header:x-api-key".into());
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        for (address, allowed) in [("10.0.0.1", true), ("10.0.0.2", true), ("10.0.0.3", false)] {
            let d = l.check(ip(address), &h, &[]).await.unwrap();
            assert_eq!(
                d.allowed, allowed,
                "one budget per key, whatever the address"
            );
        }
        assert!(
            l.check(ip("10.0.0.1"), &HeaderMap::new(), &[])
                .await
                .unwrap()
                .allowed
        );
    }

    #[tokio::test]
    async fn headers_say_where_the_client_stands() {
        let (l, time) = limiter(|_| {});
        let h = HeaderMap::new();
        let d = l.check(ip("10.0.0.1"), &h, &[]).await.unwrap();
        let mut out = HeaderMap::new();
        l.set_headers(&mut out, &d);
        assert_eq!(out["ratelimit-policy"], "\"api\";q=2;w=10");
        assert_eq!(out["ratelimit"], "\"api\";r=1;t=5");
        assert_eq!(out["x-ratelimit-limit"], "2");
        assert_eq!(out["x-ratelimit-remaining"], "1");
        assert_eq!(out["x-ratelimit-reset"], "5");
        assert!(l.check(ip("10.0.0.1"), &h, &[]).await.unwrap().allowed);
        let refused = l.check(ip("10.0.0.1"), &h, &[]).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_secs(5));
        time.advance(Duration::from_secs(5));
        assert!(l.check(ip("10.0.0.1"), &h, &[]).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn reused_headers_follow_the_numbers() {
        let (l, _time) = limiter(|_| {});
        let h = HeaderMap::new();
        let headers_for = |client: &str| {
            let client = ip(client);
            let l = &l;
            let h = &h;
            async move {
                let d = l.check(client, h, &[]).await.unwrap();
                let mut out = HeaderMap::new();
                l.set_headers(&mut out, &d);
                (
                    out["ratelimit"].clone(),
                    out["x-ratelimit-remaining"].clone(),
                )
            }
        };
        // Two fresh clients stand alike: the second gets the first one's values again.
        assert_eq!(headers_for("10.0.0.1").await.1, "1");
        assert_eq!(headers_for("10.0.0.2").await.1, "1");
        // The first client's second request changes the numbers, and the headers with them.
        let (rate_limit, remaining) = headers_for("10.0.0.1").await;
        assert_eq!(
            (rate_limit.to_str().unwrap(), remaining.to_str().unwrap()),
            ("\"api\";r=0;t=10", "0")
        );
        assert_eq!(headers_for("10.0.0.3").await.1, "1");
    }

    #[test]
    fn ipv4_text_is_what_display_prints() {
        let mut buf = [0u8; 15];
        for a in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "127.0.0.1",
            "1.20.100.9",
            "99.100.101.250",
        ] {
            let address: std::net::Ipv4Addr = a.parse().unwrap();
            assert_eq!(ipv4_text(address, &mut buf), address.to_string());
        }
    }

    #[test]
    fn bad_policies_name_the_field() {
        let bad = |f: fn(&mut RateLimitPolicy)| {
            let mut p = RateLimitPolicy::default();
            f(&mut p);
            RouteLimiter::compile("r", &p, &Limits::Local(keel_core::Clock::system()), &|f| {
                format!("x.{f}")
            })
            .unwrap_err()
            .field
        };
        assert_eq!(bad(|p| p.rate = 0), "x.rate_limit.rate");
        assert_eq!(bad(|p| p.key = "cookie".into()), "x.rate_limit.key");
        assert_eq!(
            bad(|p| p.bypass_roles = vec!["root".into()]),
            "x.rate_limit.bypass_roles"
        );
        assert_eq!(bad(|p| p.burst = Some(0)), "x.rate_limit.burst");
    }
}
