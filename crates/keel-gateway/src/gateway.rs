//! The gateway as a whole: built from its config, served on its own listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use keel_auth::Authenticator;
use keel_cache::Cache;
use keel_core::Clock;
pub use keel_redis::Limits;
use tokio::net::TcpListener;

use crate::breaker::BreakerStatus;
use crate::cache::ResponseCache;
use crate::config::{GatewayConfig, GatewayConfigError};
use crate::forwarded::TrustedProxies;
use crate::proxy::Proxy;
use crate::request_id::RequestIds;
use crate::routes::RouteTable;
use crate::stats::{SlowLog, SlowRequest, StatsSnapshot};
use crate::upstream::{Upstream, UpstreamAddr};

/// What to purge from the gateway's response cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One URL (path and query, as clients request it): every variant of it.
    Url(String),
    /// Paths (with query) matching a glob, e.g. `/api/habits*`.
    Pattern(String),
    /// Responses the upstream tagged so (`Surrogate-Key`/`Cache-Tag`).
    Tag(String),
}

/// The result of warming one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmed {
    /// The status the upstream (or the cache) answered.
    pub status: u16,
    /// The `X-Cache` outcome: `MISS` when it was fetched, `HIT` when already cached, …
    pub cache: String,
}

/// One route as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteStatus {
    /// The rule's name (`default` for the default rule).
    pub name: String,
    /// How it matches paths: `prefix …`, `glob …`, `regex …`, or `*`.
    pub matches: String,
    /// Methods matched; empty = all.
    pub methods: Vec<String>,
    /// Whether it caches.
    pub cache: bool,
    /// Whether it compresses.
    pub compress: bool,
    /// The rate limit it counts against, if any.
    pub rate_limit: Option<String>,
    /// Its breaker, if any.
    pub breaker: Option<BreakerStatus>,
    /// Its statistics.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
}

/// What a gateway shares with other keel instances (through Redis).
pub struct Sharing {
    /// Where rate limit budgets live: this process, or Redis for every instance.
    pub limits: Limits,
    /// Tells other instances about purges (theirs drop the same cached responses).
    pub purges: Option<keel_redis::Broadcaster>,
}

/// A reverse proxy in front of one upstream app. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    proxy: Arc<Proxy>,
    max_header_size: usize,
}

impl Gateway {
    /// Builds the gateway; `config.upstream` must be set. Responses are cached in `cache`
    /// (under `gw:` keys, sharing its memory bound and statistics); freshness reads `clock`.
    /// `auth` verifies credentials where a rate limit is per user or has bypasses. Rate limit
    /// budgets are kept in this process.
    pub fn new(
        config: &GatewayConfig,
        cache: Cache,
        clock: Clock,
        auth: Option<Arc<Authenticator>>,
    ) -> Result<Self, GatewayConfigError> {
        let sharing = Sharing {
            limits: Limits::Local(clock.clone()),
            purges: None,
        };
        Self::with_sharing(config, cache, clock, auth, sharing)
    }

    /// As [`Gateway::new`], sharing rate limit budgets and purges with other instances as
    /// `sharing` says.
    pub fn with_sharing(
        config: &GatewayConfig,
        cache: Cache,
        clock: Clock,
        auth: Option<Arc<Authenticator>>,
        sharing: Sharing,
    ) -> Result<Self, GatewayConfigError> {
        let Sharing { limits, purges } = sharing;
        config.validate()?;
        let url = config.upstream.as_deref().ok_or_else(|| {
            GatewayConfigError::new("gateway.upstream", "must be set to run the gateway")
        })?;
        let addr = UpstreamAddr::parse(url)
            .map_err(|reason| GatewayConfigError::new("gateway.upstream", reason))?;
        let upstream_host = HeaderValue::from_str(addr.authority.as_str())
            .map_err(|e| GatewayConfigError::new("gateway.upstream", e.to_string()))?;
        let proxy = Proxy {
            routes: RouteTable::compile(config, clock.clone(), limits)?,
            upstream: Upstream::new(addr, config),
            trusted: TrustedProxies::parse(&config.trusted_proxies)?,
            request_ids: RequestIds::new(),
            preserve_host: config.preserve_host,
            upstream_host,
            cache: ResponseCache::new(cache, clock.clone(), purges),
            tag_headers: config
                .tag_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            auth: config
                .app_jwt()?
                .map(Arc::new)
                .into_iter()
                .chain(auth)
                .collect(),
            slow_threshold: config.slow_threshold.get(),
            slow_log: SlowLog::default(),
            clock: clock.clone(),
        };
        Ok(Self {
            proxy: Arc::new(proxy),
            max_header_size: usize::try_from(config.max_header_size.bytes()).unwrap_or(usize::MAX),
        })
    }

    /// Purges cached responses; returns how many entries went. Walks the keyspace in pages
    /// for patterns, so call it off the async threads (`spawn_blocking`) on large caches.
    pub fn purge(&self, what: &Purge) -> usize {
        let cache = &self.proxy.cache;
        match what {
            Purge::Url(target) => cache.purge_url(target),
            Purge::Pattern(pattern) => cache.purge_pattern(pattern),
            Purge::Tag(tag) => cache.purge_tag(tag),
        }
    }

    /// Fetches `path` (with any query) through the gateway as a plain client GET would, so it
    /// lands in the cache; returns the status and `X-Cache` outcome.
    pub async fn warm(&self, path: &str) -> Result<Warmed, String> {
        let uri: http::Uri = path
            .parse()
            .map_err(|e| format!("\"{path}\" is not a path: {e}"))?;
        if !path.starts_with('/') || uri.authority().is_some() {
            return Err(format!("\"{path}\" must be a path starting with /"));
        }
        let mut request = http::Request::new(axum::body::Body::empty());
        *request.uri_mut() = uri;
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let peer_value = HeaderValue::from_static("127.0.0.1");
        let response = self.proxy.clone().handle(request, peer, peer_value).await;
        let cache = response
            .headers()
            .get(&crate::proxy::X_CACHE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("BYPASS")
            .to_owned();
        Ok(Warmed {
            status: response.status().as_u16(),
            cache,
        })
    }

    /// Every breaker's state: the default rule's (shared by the routes without their own), then
    /// each rule's own.
    pub fn breakers(&self) -> Vec<BreakerStatus> {
        self.proxy
            .routes
            .breakers
            .iter()
            .map(|b| b.status())
            .collect()
    }

    /// Each route's statistics: the rules in order, then the default rule.
    pub fn routes(&self) -> Vec<RouteStatus> {
        self.proxy
            .routes
            .all()
            .map(|r| RouteStatus {
                name: r.name.clone(),
                matches: r.matches.clone(),
                methods: r.methods.iter().map(|m| m.to_string()).collect(),
                cache: r.cache.is_some(),
                compress: r.compress.is_some(),
                rate_limit: r.limiter.as_ref().map(|l| l.name.clone()),
                breaker: r.breaker.as_ref().map(|b| b.status()),
                stats: r.stats.snapshot(),
            })
            .collect()
    }

    /// The newest requests slower than `gateway.slow_threshold`, newest first.
    pub fn slow(&self, limit: usize) -> Vec<SlowRequest> {
        self.proxy.slow_log.newest(limit)
    }

    /// `gateway.slow_threshold`.
    pub fn slow_threshold(&self) -> Duration {
        self.proxy.slow_threshold
    }

    /// The upstream's `host:port`, for health checks.
    pub fn upstream_authority(&self) -> String {
        self.proxy.upstream.addr.authority.to_string()
    }

    /// Serves clients on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) until
    /// `stop_accepting` resolves, then waits for open connections to finish their requests.
    /// The caller bounds that wait (keel's `server.shutdown_grace`).
    pub async fn serve(
        self,
        listener: TcpListener,
        stop_accepting: impl Future<Output = ()> + Send,
    ) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .max_buf_size(self.max_header_size)
            .header_read_timeout(Duration::from_secs(30));
        let graceful = GracefulShutdown::new();
        // Rate limiters forget clients back at a full budget, so memory follows active clients.
        let proxy = self.proxy.clone();
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            loop {
                every.tick().await;
                for limiter in &proxy.routes.limiters {
                    limiter.forget_idle();
                }
            }
        });
        let mut stop_accepting = std::pin::pin!(stop_accepting);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "gateway: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop_accepting => break,
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.proxy.clone();
            let peer_value =
                HeaderValue::from_str(&crate::forwarded::canonical(peer.ip()).to_string())
                    .expect("an IP address is a valid header value");
            let service = service_fn(move |request| {
                let (proxy, peer_value) = (proxy.clone(), peer_value.clone());
                async move {
                    let request = request.map(axum::body::Body::new);
                    Ok::<_, Infallible>(proxy.handle(request, peer, peer_value).await)
                }
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::trace!(error = %e, "gateway connection ended with an error");
                }
            });
        }
        drop(listener);
        sweeper.abort();
        graceful.shutdown().await;
    }
}
