//! One request through the gateway: find its route, apply the route's limits, rewrite the
//! headers, send it upstream with the body streamed, and stream the response back.
//!
//! The steps run as one function rather than a stack of tower layers: each request's policies
//! come from the route it matched, known only once the request is seen, and a fixed function
//! keeps the hot path free of boxed services and per-layer futures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::Limited;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::Watched;
use crate::error::GatewayError;
use crate::forwarded::{TrustedProxies, strip_hop_by_hop};
use crate::request_id::{RequestIds, X_REQUEST_ID};
use crate::routes::{Route, RouteTable};
use crate::upgrade;
use crate::upstream::Upstream;

/// The client's address as the gateway resolved it (see `trusted_proxies`), for the app.
static X_REAL_IP: http::HeaderName = http::HeaderName::from_static("x-real-ip");

/// Everything a request needs, shared by all connections.
pub(crate) struct Proxy {
    pub(crate) routes: RouteTable,
    pub(crate) upstream: Upstream,
    pub(crate) trusted: TrustedProxies,
    pub(crate) request_ids: RequestIds,
    pub(crate) preserve_host: bool,
    /// The upstream's authority as a `Host` value, for `preserve_host = false`.
    pub(crate) upstream_host: HeaderValue,
}

impl Proxy {
    /// Answers one request from `peer`.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.request_ids.for_request(request.headers());
        let route = self.routes.find(request.method(), request.uri().path());
        let mut response = match self
            .forward(request, peer, route, &request_id, started)
            .await
        {
            Ok(response) => response,
            Err(e) => {
                let id = request_id.to_str().unwrap_or_default();
                tracing::debug!(route = %route.name, request_id = id, error = %e, "gateway answered itself");
                e.into_problem(id)
            }
        };
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), request_id);
        if route.security_headers {
            add_security_headers(headers);
        }
        response
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        route: &Route,
        request_id: &HeaderValue,
        started: Instant,
    ) -> Result<Response<Body>, GatewayError> {
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
        let upgrade = upgrade::requested(&request)
            .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
        let (mut parts, body) = request.into_parts();
        let uri = self
            .upstream
            .addr
            .uri_for(&parts.uri)
            .map_err(|e| GatewayError::Upstream(e.to_string()))?;
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if let Some((protocol, _)) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        let client_ip = self.trusted.client_ip(peer.ip(), headers);
        self.trusted.set_forwarded(peer.ip(), host.clone(), headers);
        if let Ok(ip) = HeaderValue::from_str(&client_ip.to_string()) {
            headers.insert(X_REAL_IP.clone(), ip);
        }
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        match host {
            Some(host) if self.preserve_host => headers.insert(header::HOST, host),
            _ => headers.insert(header::HOST, self.upstream_host.clone()),
        };
        parts.uri = uri;
        // The upstream speaks HTTP/1.1 whatever the client spoke.
        parts.version = Version::HTTP_11;
        let body = Body::new(Limited::new(
            body,
            usize::try_from(route.max_body).unwrap_or(usize::MAX),
        ));
        let wait = headers_wait(route, started);
        let mut response = self
            .upstream
            .send(Request::from_parts(parts, body), wait, route.max_body)
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
        let body = Watched::new(body, route.read_timeout, route.timeout, started, permit);
        Ok(Response::from_parts(parts, Body::new(body)))
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

/// The security headers, where the upstream did not set its own.
fn add_security_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    ] {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
}
