//! The compiled route table: each rule's matcher and its policies resolved against the default
//! rule and the gateway-wide settings, so a request needs one scan and no lookups after.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use keel_cache::Glob;
use regex::Regex;
use tokio::sync::Semaphore;

use http::HeaderValue;

use crate::cache::key::KeyTemplate;
use keel_core::Clock;
use keel_redis::Limits;

use crate::breaker::RouteBreaker;
use crate::compress::Compression;
use crate::config::{CachePolicy, CompressPolicy, GatewayConfig, GatewayConfigError, RouteRule};
use crate::ratelimit::RouteLimiter;
use crate::stats::RouteStats;

/// How a rule matches a path.
#[derive(Debug)]
enum PathMatch {
    /// Every path (the default rule, or a rule with no path matcher).
    Any,
    Prefix(String),
    Glob(Glob),
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Glob(g) => g.matches(path),
            Self::Regex(r) => r.is_match(path),
        }
    }
}

/// Headers keel adds to every cached answer: `Age`, `X-Cache` and `X-Request-Id`.
pub(crate) const ANSWER_HEADERS: usize = 3;

/// What a matched route asks of a request, every field resolved.
#[derive(Debug)]
pub(crate) struct Route {
    /// For metrics and the API.
    pub(crate) name: String,
    matcher: PathMatch,
    /// Empty = every method.
    pub(crate) methods: Vec<Method>,
    pub(crate) max_body: u64,
    /// Zero = no limit.
    pub(crate) timeout: Duration,
    pub(crate) read_timeout: Duration,
    /// The route's in-flight cap, when it has one.
    pub(crate) concurrency: Option<Arc<Semaphore>>,
    pub(crate) max_concurrent: Option<usize>,
    pub(crate) security_headers: bool,
    /// How the route caches; `None` = it does not (`enabled = false`).
    pub(crate) cache: Option<RouteCache>,
    /// Path globs purged when an unsafe request to this route succeeds.
    pub(crate) purge: Vec<String>,
    /// How the route compresses; `None` = it does not.
    pub(crate) compress: Option<Compression>,
    /// The rate limit the route's requests count against.
    pub(crate) limiter: Option<Arc<RouteLimiter>>,
    /// The breaker guarding the route's upstream calls.
    pub(crate) breaker: Option<Arc<RouteBreaker>>,
    /// The route's own statistics.
    pub(crate) stats: Arc<RouteStats>,
    /// How the rule matches, for the API (`prefix /api/`, `glob …`, `regex …`, `*`).
    pub(crate) matches: String,
}

/// A route's cache policy, compiled.
#[derive(Debug)]
pub(crate) struct RouteCache {
    pub(crate) key: KeyTemplate,
    /// Freshness when the upstream gives none (or always, with `override`).
    pub(crate) ttl: Option<Duration>,
    pub(crate) override_upstream: bool,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) browser_cache_control: Option<HeaderValue>,
}

impl RouteCache {
    fn compile(
        policy: &CachePolicy,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Option<Self>, GatewayConfigError> {
        if !policy.enabled {
            return Ok(None);
        }
        let err = |f: &str, reason: String| GatewayConfigError::new(field(f), reason);
        if policy.override_upstream && policy.ttl.is_none_or(|t| t.get().is_zero()) {
            return Err(err(
                "cache.override",
                "needs a cache.ttl greater than 0".to_owned(),
            ));
        }
        let key = KeyTemplate::new(policy).map_err(|e| err("cache.key_headers", e))?;
        let browser_cache_control = policy
            .browser_cache_control
            .as_deref()
            .map(|v| {
                HeaderValue::from_str(v).map_err(|_| {
                    err(
                        "cache.browser_cache_control",
                        format!("\"{v}\" is not a valid header value"),
                    )
                })
            })
            .transpose()?;
        Ok(Some(Self {
            key,
            ttl: policy.ttl.map(|t| t.get()).filter(|t| !t.is_zero()),
            override_upstream: policy.override_upstream,
            stale_while_revalidate: policy.stale_while_revalidate.get(),
            stale_if_error: policy.stale_if_error.get(),
            browser_cache_control,
        }))
    }
}

impl Route {
    fn matches(&self, method: &Method, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method)) && self.matcher.matches(path)
    }

    /// How many headers keel adds to a cached answer on this route: [`ANSWER_HEADERS`], the
    /// rate-limit headers and the security headers. A hit's header map reserves room for them
    /// at once (see `cache::heads`).
    pub(crate) fn added_headers(&self) -> usize {
        let limit = if self.limiter.is_some() {
            crate::ratelimit::HEADERS
        } else {
            0
        };
        let security = if self.security_headers {
            crate::proxy::SECURITY_HEADERS.len()
        } else {
            0
        };
        ANSWER_HEADERS + limit + security
    }
}

/// The rules in order, then the default rule.
#[derive(Debug)]
pub(crate) struct RouteTable {
    routes: Vec<Arc<Route>>,
    default: Arc<Route>,
    /// Every distinct limiter and breaker (the default's shared ones first).
    pub(crate) limiters: Vec<Arc<RouteLimiter>>,
    pub(crate) breakers: Vec<Arc<RouteBreaker>>,
}

/// The default rule's limiter and breaker, shared by the rules without their own.
struct Shared {
    limiter: Option<Arc<RouteLimiter>>,
    breaker: Option<Arc<RouteBreaker>>,
    clock: Clock,
    limits: Limits,
}

impl RouteTable {
    /// Compiles the config's rules, naming the rule and field of the first error. Rate limits
    /// keep their budgets in `limits`; breakers read `clock`.
    pub(crate) fn compile(
        config: &GatewayConfig,
        clock: Clock,
        limits: Limits,
    ) -> Result<Self, GatewayConfigError> {
        let default_field = |f: &str| format!("gateway.default.{f}");
        let shared = Shared {
            limiter: config
                .default
                .rate_limit
                .as_ref()
                .map(|p| RouteLimiter::compile("default", p, &limits, &default_field).map(Arc::new))
                .transpose()?,
            breaker: config
                .default
                .breaker
                .as_ref()
                .map(|p| {
                    RouteBreaker::compile("default", p, clock.clone(), &default_field).map(Arc::new)
                })
                .transpose()?,
            clock,
            limits,
        };
        let mut limiters: Vec<Arc<RouteLimiter>> = shared.limiter.iter().cloned().collect();
        let mut breakers: Vec<Arc<RouteBreaker>> = shared.breaker.iter().cloned().collect();
        let default = RouteRule {
            policy: config.default.clone(),
            ..RouteRule::default()
        };
        let default = Self::route(config, &default, None, "gateway.default", &shared)?;
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, rule) in config.routes.iter().enumerate() {
            let path = format!("gateway.routes[{i}]");
            let route = Self::route(config, rule, Some(i), &path, &shared)?;
            if rule.policy.rate_limit.is_some() {
                limiters.extend(route.limiter.clone());
            }
            if rule.policy.breaker.is_some() {
                breakers.extend(route.breaker.clone());
            }
            if routes.iter().any(|r: &Arc<Route>| r.name == route.name) {
                return Err(GatewayConfigError::new(
                    format!("{path}.name"),
                    format!("\"{}\" names an earlier rule too", route.name),
                ));
            }
            routes.push(Arc::new(route));
        }
        Ok(Self {
            routes,
            default: Arc::new(default),
            limiters,
            breakers,
        })
    }

    fn route(
        config: &GatewayConfig,
        rule: &RouteRule,
        index: Option<usize>,
        path: &str,
        shared: &Shared,
    ) -> Result<Route, GatewayConfigError> {
        let err = |f: &str, reason: String| GatewayConfigError::new(format!("{path}.{f}"), reason);
        let matcher = match (&rule.prefix, &rule.glob, &rule.regex) {
            (None, None, None) => PathMatch::Any,
            (Some(p), None, None) => {
                if !p.starts_with('/') {
                    return Err(err("prefix", format!("\"{p}\" must start with /")));
                }
                PathMatch::Prefix(p.clone())
            }
            (None, Some(g), None) => {
                if !g.starts_with('/') && !g.starts_with('*') {
                    return Err(err("glob", format!("\"{g}\" must start with / or *")));
                }
                PathMatch::Glob(Glob::new(g))
            }
            (None, None, Some(r)) => PathMatch::Regex(
                Regex::new(r).map_err(|e| err("regex", format!("not a valid regex: {e}")))?,
            ),
            _ => {
                return Err(err(
                    "prefix",
                    "give exactly one of prefix, glob and regex".to_owned(),
                ));
            }
        };
        let methods = rule
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| err("methods", format!("\"{m}\" is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = match (&rule.name, index) {
            (Some(name), _) if name.trim().is_empty() => {
                return Err(err("name", "must not be empty when set".to_owned()));
            }
            (Some(name), _) => name.clone(),
            (None, Some(i)) => format!("route{i}"),
            (None, None) => "default".to_owned(),
        };
        // A route's unset policies fall back to the default rule's, then to the gateway's.
        for (j, pattern) in rule.purge.iter().enumerate() {
            if !pattern.starts_with('/') && !pattern.starts_with('*') {
                return Err(err(
                    &format!("purge[{j}]"),
                    format!("\"{pattern}\" must start with / or *"),
                ));
            }
        }
        let purge = rule.purge.clone();
        let rule_match = (rule.prefix.clone(), rule.glob.clone(), rule.regex.clone());
        let fallback = &config.default;
        let rule = &rule.policy;
        let cache_policy = rule.cache.as_ref().or(fallback.cache.as_ref());
        let cache_field = |f: &str| {
            if rule.cache.is_some() {
                format!("{path}.{f}")
            } else {
                format!("gateway.default.{f}")
            }
        };
        let cache = RouteCache::compile(
            cache_policy.unwrap_or(&CachePolicy::default()),
            &cache_field,
        )?;
        let compress_field = |f: &str| {
            if rule.compress.is_some() {
                format!("{path}.{f}")
            } else {
                format!("gateway.default.{f}")
            }
        };
        let compress = Compression::compile(
            rule.compress
                .as_ref()
                .or(fallback.compress.as_ref())
                .unwrap_or(&CompressPolicy::default()),
            &compress_field,
        )?;
        let own_field = |f: &str| format!("{path}.{f}");
        let limiter = match &rule.rate_limit {
            Some(p) if index.is_some() => Some(Arc::new(RouteLimiter::compile(
                &name,
                p,
                &shared.limits,
                &own_field,
            )?)),
            _ => shared.limiter.clone(),
        };
        let breaker = match &rule.breaker {
            Some(p) if index.is_some() => Some(Arc::new(RouteBreaker::compile(
                &name,
                p,
                shared.clock.clone(),
                &own_field,
            )?)),
            _ => shared.breaker.clone(),
        };
        let max_concurrent = rule.max_concurrent.or(fallback.max_concurrent);
        if max_concurrent == Some(0) {
            return Err(err(
                "max_concurrent",
                "must be at least 1 (leave it out for no cap)".to_owned(),
            ));
        }
        let read_timeout = rule
            .read_timeout
            .or(fallback.read_timeout)
            .unwrap_or(config.read_timeout)
            .get();
        if read_timeout.is_zero() {
            return Err(err("read_timeout", "must be greater than 0".to_owned()));
        }
        Ok(Route {
            name,
            matcher,
            methods,
            max_body: rule
                .max_body
                .or(fallback.max_body)
                .unwrap_or(config.max_body)
                .bytes(),
            timeout: rule
                .timeout
                .or(fallback.timeout)
                .unwrap_or(config.timeout)
                .get(),
            read_timeout,
            concurrency: max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            max_concurrent,
            security_headers: rule
                .security_headers
                .or(fallback.security_headers)
                .unwrap_or(false),
            cache,
            purge,
            compress,
            limiter,
            breaker,
            stats: Arc::new(RouteStats::new(shared.clock.clone())),
            matches: match (&rule_match.0, &rule_match.1, &rule_match.2) {
                (Some(p), _, _) => format!("prefix {p}"),
                (_, Some(g), _) => format!("glob {g}"),
                (_, _, Some(r)) => format!("regex {r}"),
                _ => "*".to_owned(),
            },
        })
    }

    /// The first rule matching, else the default rule.
    pub(crate) fn find(&self, method: &Method, path: &str) -> &Arc<Route> {
        self.routes
            .iter()
            .find(|r| r.matches(method, path))
            .unwrap_or(&self.default)
    }

    /// Every rule, then the default.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Route>> + '_ {
        self.routes.iter().chain(std::iter::once(&self.default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::HumanDuration;

    fn rule(f: impl FnOnce(&mut RouteRule)) -> RouteRule {
        let mut r = RouteRule::default();
        f(&mut r);
        r
    }

    fn table(routes: Vec<RouteRule>) -> RouteTable {
        let mut config = GatewayConfig::default();
        config.routes = routes;
        RouteTable::compile(&config, Clock::system(), Limits::Local(Clock::system())).unwrap()
    }

    fn error(config: GatewayConfig) -> String {
        RouteTable::compile(&config, Clock::system(), Limits::Local(Clock::system()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn first_match_wins_and_the_default_takes_the_rest() {
        let t = table(vec![
            rule(|r| {
                r.name = Some("habit-writes".into());
                r.glob = Some("/api/habits/*".into());
                r.methods = vec!["put".into(), "DELETE".into()];
            }),
            rule(|r| r.prefix = Some("/api/".into())),
            rule(|r| r.regex = Some(r"^/v[0-9]+/".into())),
        ]);
        let name = |m: Method, p: &str| t.find(&m, p).name.clone();
        assert_eq!(name(Method::PUT, "/api/habits/42"), "habit-writes");
        assert_eq!(name(Method::GET, "/api/habits/42"), "route1");
        assert_eq!(name(Method::GET, "/v2/x"), "route2");
        assert_eq!(name(Method::GET, "/vx/x"), "default");
        assert_eq!(name(Method::GET, "/"), "default");
    }

    #[test]
    fn policies_fall_back_to_the_default_rule_then_the_gateway() {
        let mut config = GatewayConfig::default();
        config.timeout = HumanDuration::from_secs(9);
        config.default.max_concurrent = Some(5);
        config.routes = vec![rule(|r| {
            r.prefix = Some("/a".into());
            r.policy.max_concurrent = Some(2);
        })];
        let t =
            RouteTable::compile(&config, Clock::system(), Limits::Local(Clock::system())).unwrap();
        let a = t.find(&Method::GET, "/a");
        assert_eq!(a.max_concurrent, Some(2));
        assert_eq!(a.timeout, Duration::from_secs(9));
        assert_eq!(t.find(&Method::GET, "/b").max_concurrent, Some(5));
    }

    #[test]
    fn rule_errors_name_the_rule_and_field() {
        let with = |r: RouteRule| {
            let mut c = GatewayConfig::default();
            c.routes = vec![rule(|r| r.prefix = Some("/ok".into())), r];
            error(c)
        };
        assert!(
            with(rule(|r| r.regex = Some("(".into())))
                .starts_with("gateway.routes[1].regex: not a valid regex")
        );
        assert!(
            with(rule(|r| {
                r.prefix = Some("/a".into());
                r.glob = Some("/a*".into());
            }))
            .starts_with("gateway.routes[1].prefix: give exactly one")
        );
        assert!(
            with(rule(|r| r.prefix = Some("api".into())))
                .starts_with("gateway.routes[1].prefix: \"api\" must start with /")
        );
        assert!(
            with(rule(|r| r.methods = vec!["GE T".into()]))
                .starts_with("gateway.routes[1].methods: \"GE T\" is not an HTTP method")
        );
        assert!(
            with(rule(|r| r.policy.max_concurrent = Some(0)))
                .starts_with("gateway.routes[1].max_concurrent")
        );
        assert!(
            with(rule(|r| r.name = Some("route0".into())))
                .starts_with("gateway.routes[1].name: \"route0\" names an earlier rule")
        );
        let mut c = GatewayConfig::default();
        c.default.max_concurrent = Some(0);
        assert!(error(c).starts_with("gateway.default.max_concurrent"));
    }
}
