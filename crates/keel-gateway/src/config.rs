//! The `[gateway]` config section and its route rules (`[[gateway.routes]]`).

use std::net::SocketAddr;

use keel_core::{ByteSize, HumanDuration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The gateway: a reverse proxy in front of one upstream app.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address and port the gateway listens on (`--gateway-listen`), separate from the API's.
    pub listen: SocketAddr,
    /// The app behind the gateway, `http://host:port` (`--upstream`). Unset = no gateway.
    pub upstream: Option<String>,
    /// Peers (addresses or CIDR ranges, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are believed; from anyone else they are
    /// replaced.
    pub trusted_proxies: Vec<String>,
    /// Longest wait for a TCP connection to the upstream (504 when exceeded).
    pub connect_timeout: HumanDuration,
    /// Longest silence from the upstream: waiting for the response headers (504 when exceeded)
    /// or between two pieces of the response body (the response is cut off).
    pub read_timeout: HumanDuration,
    /// Longest a whole exchange may take, body included; "0" = no limit (long downloads and
    /// streams). Before the response headers: 504; after: the response is cut off.
    pub timeout: HumanDuration,
    /// Largest request body passed upstream; larger ones get 413. Bodies are streamed, never
    /// held whole in memory.
    pub max_body: ByteSize,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_size: ByteSize,
    /// Idle keep-alive connections kept open to the upstream.
    pub pool_max_idle: usize,
    /// How long an idle upstream connection is kept.
    pub pool_idle_timeout: HumanDuration,
    /// Send the client's `Host` header upstream (true) or the upstream's own host and port.
    pub preserve_host: bool,
    /// The app's own JWTs, verified so rate limits keyed by `user` count per user and
    /// `bypass_roles` can use the role in `role_claim`. Apart from `[auth]`: these tokens grant
    /// nothing in keel's API. Tokens without the role claim count as `viewer` unless
    /// `default_role` says otherwise. Unset = only keel's own credentials (`[auth]`) count.
    pub jwt: keel_auth::JwtConfig,
    /// Requests taking longer than this (to the response headers) are listed in
    /// `GET /api/v1/gateway/slow`.
    pub slow_threshold: HumanDuration,
    /// Response headers whose space-separated (or comma-separated) values tag a cached response
    /// for purging by tag; removed before the response reaches the client.
    pub tag_headers: Vec<String>,
    /// Policies for requests no route rule matches, and for what a rule leaves unset.
    pub default: RoutePolicy,
    /// Route rules, tried in order; the first whose path and method match applies.
    pub routes: Vec<RouteRule>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream: None,
            trusted_proxies: Vec::new(),
            connect_timeout: HumanDuration::from_secs(5),
            read_timeout: HumanDuration::from_secs(60),
            timeout: HumanDuration::from_secs(0),
            max_body: ByteSize::mib(64),
            max_header_size: ByteSize::kib(64),
            pool_max_idle: 256,
            pool_idle_timeout: HumanDuration::from_secs(90),
            preserve_host: true,
            jwt: keel_auth::JwtConfig::default(),
            slow_threshold: HumanDuration::from_secs(1),
            tag_headers: vec!["surrogate-key".to_owned(), "cache-tag".to_owned()],
            default: RoutePolicy::default(),
            routes: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// The verifier of the app's JWTs (`gateway.jwt`), when configured.
    pub(crate) fn app_jwt(&self) -> Result<Option<keel_auth::Authenticator>, GatewayConfigError> {
        if !self.jwt.enabled() {
            return Ok(None);
        }
        let auth = keel_auth::AuthConfig {
            jwt: keel_auth::JwtConfig {
                default_role: self.jwt.default_role.or(Some(keel_auth::Role::Viewer)),
                ..self.jwt.clone()
            },
            ..keel_auth::AuthConfig::default()
        };
        keel_auth::Authenticator::new(&auth, None)
            .map(Some)
            .map_err(|e| {
                let field = e.field.replacen("auth.jwt", "gateway.jwt", 1);
                GatewayConfigError::new(field, e.reason)
            })
    }
}

/// One route rule: which requests it matches (a path by exactly one of `prefix`, `glob` or
/// `regex`, and optionally methods) and the policies it sets. A policy left out falls back to
/// `[gateway.default]`, then to the gateway-wide setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct RouteRule {
    /// A name for metrics and the API; default `route<index>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Matches paths starting with this, e.g. `/api/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Matches paths by a glob (`*`, `?`, `[a-z]`, `\` escape), e.g. `/api/habits/*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// Matches paths by a regular expression (unanchored unless it says `^…$`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Methods matched, e.g. `["GET", "HEAD"]`; empty = every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Cached paths to purge (globs, e.g. `/api/habits*`) when a POST, PUT, PATCH or DELETE
    /// matching this rule succeeds (2xx or 3xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purge: Vec<String>,
    /// What the rule does to the requests it matches.
    #[serde(flatten)]
    pub policy: RoutePolicy,
}

// By hand because serde cannot combine `flatten` with `deny_unknown_fields`: the match fields
// are taken out, and the rest must be policies (a misspelt key is an error, not ignored).
impl<'de> Deserialize<'de> for RouteRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut fields = serde_json::Map::deserialize(deserializer)?;
        let mut take = |name: &str| fields.remove(name).unwrap_or(serde_json::Value::Null);
        let field = |name: &str, value: serde_json::Value| -> Result<Option<String>, D::Error> {
            serde_json::from_value(value).map_err(|e| D::Error::custom(format!("{name}: {e}")))
        };
        let name = field("name", take("name"))?;
        let prefix = field("prefix", take("prefix"))?;
        let glob = field("glob", take("glob"))?;
        let regex = field("regex", take("regex"))?;
        let list = |name: &str, value: serde_json::Value| -> Result<Vec<String>, D::Error> {
            match value {
                serde_json::Value::Null => Ok(Vec::new()),
                v => {
                    serde_json::from_value(v).map_err(|e| D::Error::custom(format!("{name}: {e}")))
                }
            }
        };
        let methods = list("methods", take("methods"))?;
        let purge = list("purge", take("purge"))?;
        let policy: RoutePolicy =
            serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                // Name the misspelt key: the caller's path ends at the rule.
                match message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split_once('`'))
                {
                    Some((key, expected)) => D::Error::custom(format!(
                        "{key}: unknown key; {}",
                        expected.trim_start_matches(", ")
                    )),
                    None => D::Error::custom(format!("{path}: {message}")),
                }
            })?;
        Ok(Self {
            name,
            prefix,
            glob,
            regex,
            methods,
            purge,
            policy,
        })
    }
}

/// What a rule does to the requests it matches. Every policy is optional: unset falls back to
/// `[gateway.default]`, then to the gateway-wide setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RoutePolicy {
    /// Largest request body (413 above it); default `gateway.max_body`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<ByteSize>,
    /// Longest exchange; default `gateway.timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Longest upstream silence; default `gateway.read_timeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<HumanDuration>,
    /// Requests in flight at once; more get 503 at once. Unset = no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// Add `Strict-Transport-Security`, `X-Content-Type-Options`, `X-Frame-Options` and
    /// `Referrer-Policy` to responses (where the upstream did not set them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<bool>,
    /// Response caching (GET and HEAD); a rule's `cache` replaces the default rule's as a whole.
    /// Unset everywhere = a standard shared cache that stores what the upstream allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Response compression; a rule's `compress` replaces the default rule's as a whole. Unset
    /// everywhere = compressible responses of 1 KiB and more are compressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressPolicy>,
    /// Rate limiting. Routes that leave it out share the default rule's limiter (one budget
    /// per key across all of them); unset everywhere = no rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitPolicy>,
    /// A circuit breaker toward the upstream. Routes that leave it out share the default
    /// rule's breaker (one for the upstream); unset everywhere = no breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerPolicy>,
}

/// A GCRA rate limit: on average `rate` requests per `per` for each key, with bursts of
/// `burst`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Requests per `per`, on average (at least 1).
    pub rate: u32,
    /// The period of `rate`, e.g. `"1s"` or `"1m"`.
    pub per: HumanDuration,
    /// Requests allowed back to back after a quiet spell; unset = `rate`.
    pub burst: Option<u32>,
    /// What a budget belongs to: `ip` (the client's address; see `trusted_proxies`),
    /// `header:<name>` (e.g. an API key header), `user` (the subject of a credential keel
    /// verifies with `[auth]`, else the address) or `route` (one budget for everyone).
    pub key: String,
    /// IPv6 clients are counted per network of this prefix length (one budget per /64 by
    /// default: a host usually holds a whole /64).
    pub ipv6_prefix: u8,
    /// Requests whose credential (verified with `[auth]`) has one of these roles are not
    /// limited, e.g. `["admin"]`.
    pub bypass_roles: Vec<String>,
    /// Requests whose credential's subject (token name or JWT `sub`) is listed are not limited.
    pub bypass_subjects: Vec<String>,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self {
            rate: 100,
            per: HumanDuration::from_secs(1),
            burst: None,
            key: "ip".to_owned(),
            ipv6_prefix: 64,
            bypass_roles: Vec::new(),
            bypass_subjects: Vec::new(),
        }
    }
}

/// When the breaker toward the upstream opens: the failure (or slow-call) rate over recent
/// calls. Failures are connection errors, timeouts and 5xx answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// The window is the last this many calls (unless `window` is set).
    pub window_calls: u32,
    /// The window is the calls of this last period instead, e.g. `"30s"`.
    pub window: Option<HumanDuration>,
    /// Fewer calls in the window never open the breaker.
    pub minimum_calls: u32,
    /// Share of failed calls (0–1] that opens the breaker.
    pub failure_rate: f64,
    /// A call slower than this counts as slow, e.g. `"2s"`; unset = none are.
    pub slow_call: Option<HumanDuration>,
    /// Share of slow calls (0–1] that opens the breaker.
    pub slow_rate: f64,
    /// How long the breaker stays open: requests get a stale cached copy or 503 at once.
    pub open_for: HumanDuration,
    /// Trial requests let through after `open_for`; all must succeed to close it.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window_calls: 20,
            window: None,
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_call: None,
            slow_rate: 1.0,
            open_for: HumanDuration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// How a route compresses responses for clients that accept it (`Accept-Encoding`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompressPolicy {
    /// Compress this route's responses; false = pass them as the upstream sent them.
    pub enabled: bool,
    /// Smaller responses are sent as they are.
    pub min_size: ByteSize,
    /// Content types compressed (`type/subtype`, or `type/*`); others are sent as they are.
    pub types: Vec<String>,
    /// Encodings offered, in order of preference when a client accepts several equally:
    /// `br`, `zstd`, `gzip`.
    pub encodings: Vec<String>,
    /// gzip level, 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
    /// Brotli quality, 0 (fastest) to 11 (smallest).
    pub br_level: u32,
    /// zstd level, 1 (fastest) to 19 (smallest).
    pub zstd_level: i32,
}

impl Default for CompressPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            min_size: ByteSize::kib(1),
            types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/xhtml+xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/ld+json",
                "application/manifest+json",
                "application/problem+json",
                "application/graphql-response+json",
                "application/wasm",
                "image/svg+xml",
            ]
            .map(str::to_owned)
            .to_vec(),
            encodings: ["br", "zstd", "gzip"].map(str::to_owned).to_vec(),
            gzip_level: 6,
            br_level: 4,
            zstd_level: 3,
        }
    }
}

/// How a route caches responses (GET and HEAD; HEAD is answered from the cached GET).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CachePolicy {
    /// Cache this route's responses; false = every request goes to the upstream (`BYPASS`).
    pub enabled: bool,
    /// Freshness for responses whose `Cache-Control`/`Expires` say nothing; unset = such
    /// responses are not stored. With `override`, the freshness of every response.
    pub ttl: Option<HumanDuration>,
    /// Ignore the upstream's `Cache-Control` (`no-store`, `private`, `max-age`, `s-maxage`) and
    /// `Expires`, and store every cacheable response for `ttl` (which must be set).
    #[serde(rename = "override")]
    pub override_upstream: bool,
    /// Query parameters in the cache key: all but `key_query_ignore` when empty, else only these.
    pub key_query: Vec<String>,
    /// Query parameters left out of the cache key, e.g. `["utm_source", "fbclid"]`.
    pub key_query_ignore: Vec<String>,
    /// Request headers whose values are part of the key, e.g. `["accept-language"]`.
    pub key_headers: Vec<String>,
    /// A cookie whose value is part of the key (e.g. a locale or A/B bucket).
    pub key_cookie: Option<String>,
    /// Make the key per credential (a SHA-256 of the `Authorization` header), which lets
    /// responses to authenticated requests be cached — each user sees only their own.
    pub key_user: bool,
    /// After the freshness ends, serve the stale response this long while one background
    /// request refreshes it (`X-Cache: STALE`). The upstream's own `stale-while-revalidate`
    /// counts too (the longer wins).
    pub stale_while_revalidate: HumanDuration,
    /// After the freshness ends, serve the stale response this long when the upstream fails
    /// (connection error, timeout, 5xx) or its breaker is open.
    pub stale_if_error: HumanDuration,
    /// `Cache-Control` sent to clients instead of the upstream's, e.g. `"public, max-age=60"`.
    pub browser_cache_control: Option<String>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: None,
            override_upstream: false,
            key_query: Vec::new(),
            key_query_ignore: Vec::new(),
            key_headers: Vec::new(),
            key_cookie: None,
            key_user: false,
            stale_while_revalidate: HumanDuration::from_secs(0),
            stale_if_error: HumanDuration::from_secs(0),
            browser_cache_control: None,
        }
    }
}

/// A config value that is wrong: the key path and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct GatewayConfigError {
    /// The key path, e.g. `gateway.routes[2].regex`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

impl GatewayConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl GatewayConfig {
    /// Checks the values beyond their types; the error names the field (with the rule's index).
    /// The route table and the upstream address are compiled here too, so everything
    /// [`Gateway::new`](crate::Gateway::new) could reject is reported by `keel config check`.
    pub fn validate(&self) -> Result<(), GatewayConfigError> {
        crate::upstream::UpstreamAddr::parse(self.upstream.as_deref().unwrap_or("http://x"))
            .map_err(|reason| GatewayConfigError::new("gateway.upstream", reason))?;
        crate::forwarded::TrustedProxies::parse(&self.trusted_proxies)?;
        self.app_jwt()?;
        if self.connect_timeout.get().is_zero() {
            return Err(GatewayConfigError::new(
                "gateway.connect_timeout",
                "must be greater than 0",
            ));
        }
        if self.read_timeout.get().is_zero() {
            return Err(GatewayConfigError::new(
                "gateway.read_timeout",
                "must be greater than 0",
            ));
        }
        let head = self.max_header_size.bytes();
        if !(8 * 1024..=1024 * 1024).contains(&head) {
            return Err(GatewayConfigError::new(
                "gateway.max_header_size",
                "must be between 8KiB and 1MiB",
            ));
        }
        // Compiled only to find errors: local budgets will do.
        let clock = keel_core::Clock::system();
        crate::routes::RouteTable::compile(self, clock.clone(), keel_redis::Limits::Local(clock))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_its_match_fields_plus_policies_and_nothing_else() {
        let rule: RouteRule = serde_json::from_value(serde_json::json!({
            "prefix": "/api/", "methods": ["GET"], "max_body": "1MiB", "max_concurrent": 8
        }))
        .unwrap();
        assert_eq!(rule.prefix.as_deref(), Some("/api/"));
        assert_eq!(rule.methods, ["GET"]);
        assert_eq!(rule.policy.max_body, Some(ByteSize::mib(1)));
        assert_eq!(rule.policy.max_concurrent, Some(8));
        let back = serde_json::to_value(&rule).unwrap();
        assert_eq!(back["max_concurrent"], 8);

        let typo = serde_json::from_value::<RouteRule>(serde_json::json!({
            "prefix": "/api/", "max_bdy": "1MiB"
        }))
        .unwrap_err()
        .to_string();
        assert!(
            typo.starts_with("max_bdy: unknown key; expected one of"),
            "{typo}"
        );
        let bad = serde_json::from_value::<RouteRule>(serde_json::json!({"max_body": "lots"}))
            .unwrap_err()
            .to_string();
        assert!(bad.starts_with("max_body:"), "{bad}");
        let wrong = serde_json::from_value::<RouteRule>(serde_json::json!({"prefix": 3}))
            .unwrap_err()
            .to_string();
        assert!(wrong.starts_with("prefix:"), "{wrong}");
    }
}
