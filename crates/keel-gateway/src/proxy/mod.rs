//! One request through the gateway: find its route, apply the route's limits, then either
//! answer from the response cache (`cached`) or pass the request upstream with the body
//! streamed both ways, and purge what a successful write invalidates.
//!
//! The steps run as plain functions rather than a stack of tower layers: each request's policies
//! come from the route it matched, known only once the request is seen, and fixed functions keep
//! the hot path free of boxed services and per-layer futures.

mod cached;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::Limited;
use keel_resilience::CircuitBreaker;
use tokio::time::Instant;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::body::{Counted, Watched};
use crate::cache::ResponseCache;
use crate::compress::stream::Compressing;
use crate::compress::{Compression, Encoding, vary_on_accept_encoding};
use crate::error::GatewayError;
use crate::forwarded::{TrustedProxies, strip_hop_by_hop};
use crate::request_id::{RequestIds, X_REQUEST_ID};
use crate::routes::{Route, RouteTable};
use crate::stats::{CacheResult, RouteStats, SlowLog, SlowRequest};
use crate::upgrade;
use crate::upstream::Upstream;

/// The client's address as the gateway resolved it (see `trusted_proxies`), for the app.
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// How the cache answered: `HIT`, `MISS`, `STALE`, `BYPASS` or `REVALIDATED`.
pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Everything a request needs, shared by all connections.
pub(crate) struct Proxy {
    pub(crate) routes: RouteTable,
    pub(crate) upstream: Upstream,
    pub(crate) trusted: TrustedProxies,
    pub(crate) request_ids: RequestIds,
    pub(crate) preserve_host: bool,
    /// The upstream's authority as a `Host` value, for `preserve_host = false`.
    pub(crate) upstream_host: HeaderValue,
    pub(crate) cache: ResponseCache,
    /// Response headers carrying cache tags.
    pub(crate) tag_headers: Vec<HeaderName>,
    /// Verify credentials for per-user rate limits and bypasses: the app's JWTs
    /// (`gateway.jwt`), then keel's own credentials.
    pub(crate) auth: Vec<Arc<keel_auth::Authenticator>>,
    /// Requests slower than `slow_threshold` go in `slow_log`.
    pub(crate) slow_threshold: Duration,
    pub(crate) slow_log: SlowLog,
    pub(crate) clock: keel_core::Clock,
}

/// What one request carries through the steps.
pub(crate) struct Exchange {
    pub(crate) route: Arc<Route>,
    pub(crate) peer: SocketAddr,
    /// The client's address (the peer's, or from `X-Forwarded-For` of a trusted proxy).
    pub(crate) client_ip: std::net::IpAddr,
    /// The peer's address as a header value, made once per connection.
    pub(crate) peer_value: HeaderValue,
    pub(crate) request_id: HeaderValue,
    pub(crate) started: Instant,
    /// Microseconds the upstream took to answer; 0 = not called (yet).
    pub(crate) upstream_us: AtomicU64,
}

impl Exchange {
    /// The upstream's response body, cut off at the route's read and total timeouts, holding
    /// the route's in-flight slot until it ends.
    pub(crate) fn watch<B>(
        &self,
        body: B,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Watched<B> {
        Watched::new(
            body,
            self.route.read_timeout,
            self.route.timeout,
            self.started,
            permit,
        )
    }
}

impl Proxy {
    /// Answers one request from `peer`.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Body>,
        peer: SocketAddr,
        peer_value: HeaderValue,
    ) -> Response<Body> {
        let exchange = Exchange {
            route: self
                .routes
                .find(request.method(), request.uri().path())
                .clone(),
            peer,
            client_ip: self.trusted.client_ip(peer.ip(), request.headers()),
            peer_value,
            request_id: self.request_ids.for_request(request.headers()),
            started: Instant::now(),
            upstream_us: AtomicU64::new(0),
        };
        // Kept for the slow log: cheap clones (the URI shares its bytes), no copy of the path.
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let limited = match exchange.route.limiter.as_ref() {
            Some(limiter) => limiter
                .check(exchange.client_ip, request.headers(), &self.auth)
                .await
                .map(|decision| (limiter, decision)),
            None => None,
        };
        let result = match &limited {
            Some((_, decision)) if !decision.allowed => Err(GatewayError::RateLimited {
                retry_after: decision.retry_after,
            }),
            _ => self.serve(request, &exchange).await,
        };
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                let id = exchange.request_id.to_str().unwrap_or_default();
                tracing::debug!(route = %exchange.route.name, request_id = id, error = %e, "gateway answered itself");
                e.to_problem(id)
            }
        };
        if let Some((limiter, decision)) = &limited {
            limiter.set_headers(response.headers_mut(), decision);
            if !decision.allowed {
                RouteStats::add(&exchange.route.stats.rate_limited, 1);
            }
        }
        self.account(&mut response, &exchange, &method, uri.path());
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), exchange.request_id);
        if exchange.route.security_headers {
            add_security_headers(headers);
        }
        response
    }

    /// Counts the response in its route's statistics (and the slow log), and its body bytes as
    /// they go out.
    fn account(
        &self,
        response: &mut Response<Body>,
        exchange: &Exchange,
        method: &Method,
        path: &str,
    ) {
        let stats = &exchange.route.stats;
        let took = exchange.started.elapsed();
        let cache = response
            .headers()
            .get(&X_CACHE)
            .and_then(|v| CacheResult::from_header(v.as_bytes()));
        stats.response(response.status().as_u16(), took, cache);
        match http_body::Body::size_hint(response.body()).exact() {
            Some(len) => RouteStats::add(&stats.bytes_out, len),
            None => {
                let body = std::mem::take(response.body_mut());
                *response.body_mut() =
                    Body::new(Counted::new(body, stats.clone(), |s| &s.bytes_out));
            }
        }
        if took >= self.slow_threshold {
            let upstream_us = exchange.upstream_us.load(Ordering::Relaxed);
            self.slow_log.push(SlowRequest {
                at: self.clock.unix_ms(),
                route: exchange.route.name.clone(),
                method: method.to_string(),
                path: path.to_owned(),
                status: response.status().as_u16(),
                duration_ms: took.as_secs_f64() * 1000.0,
                upstream_ms: (upstream_us > 0).then(|| upstream_us as f64 / 1000.0),
                request_id: exchange.request_id.to_str().unwrap_or_default().to_owned(),
            });
        }
    }

    async fn serve(
        self: &Arc<Self>,
        request: Request<Body>,
        exchange: &Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        let route = &exchange.route;
        let permit =
            match &route.concurrency {
                Some(slots) => Some(slots.clone().try_acquire_owned().map_err(|_| {
                    GatewayError::Overloaded {
                        route: route.name.clone(),
                        max: route.max_concurrent.unwrap_or_default(),
                    }
                })?),
                None => None,
            };
        if content_length(request.headers()).is_some_and(|len| len > route.max_body) {
            return Err(GatewayError::BodyTooLarge {
                limit: route.max_body,
            });
        }
        let method = request.method().clone();
        let cacheable_method = method == Method::GET || method == Method::HEAD;
        if let Some(policy) = &route.cache
            && cacheable_method
            && upgrade::requested(&request).is_none()
        {
            return cached::serve(self, request, exchange, policy, permit).await;
        }
        let mut response = self.pass(request, exchange, permit).await?;
        if route.cache.is_some() {
            response
                .headers_mut()
                .insert(X_CACHE.clone(), HeaderValue::from_static("BYPASS"));
        }
        if !cacheable_method
            && !route.purge.is_empty()
            && (response.status().is_success() || response.status().is_redirection())
        {
            for pattern in &route.purge {
                let purged = self.cache.purge_pattern(pattern);
                tracing::debug!(route = %route.name, pattern, purged, "purged after a write");
            }
        }
        Ok(response)
    }

    /// Passes the request to the upstream and streams the response back.
    async fn pass(
        &self,
        mut request: Request<Body>,
        exchange: &Exchange,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Response<Body>, GatewayError> {
        let route = &exchange.route;
        let encoding = route
            .compress
            .as_ref()
            .filter(|_| request.method() != Method::HEAD)
            .and_then(|c| c.negotiate(request.headers()).map(|e| (c, e)));
        let upgrade = upgrade::requested(&request)
            .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
        let (mut parts, body) = request.into_parts();
        self.rewrite_for_upstream(&mut parts, exchange);
        if let Some((protocol, _)) = &upgrade {
            let headers = &mut parts.headers;
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        let body = if http_body::Body::is_end_stream(&body) {
            // No body (most GETs): nothing to limit or count.
            Body::empty()
        } else {
            let limit = usize::try_from(route.max_body).unwrap_or(usize::MAX);
            let body = Counted::new(body, route.stats.clone(), |s| &s.bytes_in);
            Body::new(Limited::new(body, limit))
        };
        let mut response = self
            .send_upstream(Request::from_parts(parts, body), exchange)
            .await?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            return match upgrade {
                Some((_, client)) => Ok(upgrade::tunnel(client, &mut response)),
                None => Err(GatewayError::Upstream(
                    "the upstream switched protocols without being asked to".to_owned(),
                )),
            };
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        self.strip_tag_headers(&mut parts.headers);
        let body = exchange.watch(body, permit);
        let response = Response::from_parts(parts, Body::new(body));
        Ok(match encoding {
            Some((compression, encoding)) => {
                compress_streaming(response, compression, encoding, &route.stats)
            }
            None => response,
        })
    }

    /// Sends a request upstream through the route's breaker (refused at once while it is open)
    /// and reports the outcome to it: connection errors, timeouts and 5xx are failures.
    pub(crate) async fn send_upstream(
        &self,
        request: Request<Body>,
        exchange: &Exchange,
    ) -> Result<Response<crate::pool::PooledBody>, GatewayError> {
        let route = &exchange.route;
        // Dropped with this future (the client went away), a permit fails a half-open trial.
        let permit = match &route.breaker {
            Some(b) => Some(CircuitBreaker::call(&b.breaker).map_err(|retry_after| {
                GatewayError::BreakerOpen {
                    name: b.name.clone(),
                    retry_after,
                }
            })?),
            None => None,
        };
        let wait = headers_wait(route, exchange.started);
        let sent = Instant::now();
        let result = self.upstream.send(request, wait, route.max_body).await;
        let took = sent.elapsed();
        route.stats.upstream(took);
        exchange.upstream_us.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
        if let (Some(b), Some(permit)) = (&route.breaker, permit) {
            let failed = match &result {
                Ok(response) => response.status().is_server_error(),
                // A body over the limit is the client's doing, not the upstream's.
                Err(e) => e.source() == crate::error::ErrorSource::Upstream,
            };
            b.record(permit, failed, took);
        }
        result
    }

    /// Turns a client's request head into the upstream's: upstream URI, HTTP/1.1, hop-by-hop
    /// headers out, forwarding headers and the request id in, `Host` as configured.
    fn rewrite_for_upstream(&self, parts: &mut Parts, exchange: &Exchange) {
        let uri = self.upstream.addr.uri_for(&parts.uri);
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        let peer = exchange.peer.ip();
        self.trusted
            .set_forwarded(peer, &exchange.peer_value, host.clone(), headers);
        let real_ip = if exchange.client_ip == crate::forwarded::canonical(peer) {
            Some(exchange.peer_value.clone())
        } else {
            HeaderValue::from_str(&exchange.client_ip.to_string()).ok()
        };
        if let Some(ip) = real_ip {
            headers.insert(X_REAL_IP.clone(), ip);
        }
        headers.insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
        match host {
            Some(host) if self.preserve_host => headers.insert(header::HOST, host),
            _ => headers.insert(header::HOST, self.upstream_host.clone()),
        };
        parts.uri = uri;
        // The upstream speaks HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;
    }

    /// Removes the cache-tag headers (for keel, not for clients); returns the tags.
    fn strip_tag_headers(&self, headers: &mut HeaderMap) -> Vec<String> {
        let mut tags = Vec::new();
        for name in &self.tag_headers {
            // Most responses carry none: one lookup then, not two.
            if !headers.contains_key(name) {
                continue;
            }
            for value in headers.get_all(name) {
                if let Ok(value) = value.to_str() {
                    tags.extend(
                        value
                            .split(|c: char| c == ',' || c.is_ascii_whitespace())
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned),
                    );
                }
            }
            headers.remove(name);
        }
        tags
    }
}

/// `response` compressed on the way through, if it is worth it (else as it is).
fn compress_streaming(
    response: Response<Body>,
    compression: &Compression,
    encoding: Encoding,
    stats: &Arc<RouteStats>,
) -> Response<Body> {
    let len = content_length(response.headers());
    if !compression.worth_it(response.status(), response.headers(), len) {
        return response;
    }
    let encoder = match compression.encoder(encoding) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a compressor; sending the response as is");
            return response;
        }
    };
    let (mut parts, body) = response.into_parts();
    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    weaken_etag(headers);
    vary_on_accept_encoding(headers);
    let compressing = Compressing::new(body, encoder).saving_into(stats.clone());
    Response::from_parts(parts, Body::new(compressing))
}

/// A strong `ETag` made weak: the compressed bytes are another representation of the same
/// resource (as nginx does), so a strong validator would lie.
fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
}

/// How long to wait for the response headers: the read timeout, or less if the total timeout
/// ends sooner.
fn headers_wait(route: &Route, started: Instant) -> Duration {
    if route.timeout.is_zero() {
        return route.read_timeout;
    }
    let left = route.timeout.saturating_sub(started.elapsed());
    left.min(route.read_timeout)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The security headers and their values (`security_headers = true`).
pub(crate) const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
];

/// The security headers, where the upstream did not set its own.
fn add_security_headers(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
}
