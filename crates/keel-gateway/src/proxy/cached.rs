//! GET and HEAD on a caching route: answer from the cache when fresh, serve stale while one
//! background request refreshes, coalesce concurrent misses into one upstream fetch, revalidate
//! with `ETag`/`Last-Modified`, fall back to stale when the upstream fails, and store what a
//! shared cache may store.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::PooledBody;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use super::{Exchange, Proxy, X_CACHE};
use crate::cache::control::{ResponseDirectives, age, http_date};
use crate::cache::flights::Joined;
use crate::cache::stored::{Stored, Times};
use crate::compress::{Compression, Encoding, vary_on_accept_encoding};
use crate::error::GatewayError;
use crate::forwarded::strip_hop_by_hop;
use crate::routes::RouteCache;
use crate::stats::RouteStats;

/// Request headers that make the upstream answer conditionally or partially; the cache wants
/// the whole response, and answers the client's conditions itself.
const CONDITIONAL: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Statuses stored when the response allows (those RFC 9110 calls cacheable by default).
fn storable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// How a cache answer is labelled in `X-Cache`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

impl Outcome {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Revalidated => "REVALIDATED",
            Self::Bypass => "BYPASS",
        })
    }
}

/// What a fetch through the cache produced.
enum Fetched {
    /// A response now stored (or a stale one served) and its key, to answer from.
    Stored(String, Stored, Outcome),
    /// A response that is not stored, streaming.
    Passed(Response<Body>),
}

pub(super) async fn serve(
    proxy: &Arc<Proxy>,
    request: Request<Body>,
    exchange: &Exchange,
    policy: &RouteCache,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Response<Body>, GatewayError> {
    let head = request.method() == Method::HEAD;
    let (parts, _body) = request.into_parts();
    let (uri, headers) = (parts.uri, parts.headers);
    if headers.contains_key(header::AUTHORIZATION) && !policy.key.per_user() {
        // A response to a credential is that user's; never shared unless the key is per user.
        let request = client_request(head, &uri, &headers);
        let mut response = proxy.pass(request, exchange, permit).await?;
        response
            .headers_mut()
            .insert(X_CACHE.clone(), Outcome::Bypass.header());
        return Ok(response);
    }
    let cache = &proxy.cache;
    let room = exchange.route.added_headers();
    let primary = policy.key.primary(&uri, &headers);
    // The encoding this client gets, if the route compresses (HEAD answers carry no body).
    let encoding = exchange
        .route
        .compress
        .as_ref()
        .filter(|_| !head)
        .and_then(|c| c.negotiate(&headers).map(|e| (c, e)));
    if let Some((_, encoding)) = encoding
        && let Some(encoded) = cache.get_at(&encoded_key(&primary, encoding))
    {
        // The common case first: a fresh encoded copy of a response that does not vary.
        let now = cache.now_ms();
        if now < encoded.times.fresh_until {
            return Ok(answer(
                encoded,
                Outcome::Hit,
                now,
                head,
                &headers,
                policy,
                room,
            ));
        }
    }
    let reply = |key: &str, stored: Stored, outcome: Outcome| {
        let now = cache.now_ms();
        if let Some((compression, encoding)) = encoding
            && let Some(encoded) = encode_stored(cache, compression, encoding, key, &stored, now)
        {
            let saved = stored.body.len().saturating_sub(encoded.body.len());
            RouteStats::add(&exchange.route.stats.bytes_saved, saved as u64);
            return answer(encoded, outcome, now, head, &headers, policy, room);
        }
        answer(stored, outcome, now, head, &headers, policy, room)
    };
    let mut stale = None;
    if let Some((key, stored)) = cache.lookup(&primary, &headers) {
        let now = cache.now_ms();
        if now < stored.times.fresh_until {
            return Ok(reply(&key, stored, Outcome::Hit));
        }
        if now < stored.times.stale_while_revalidate_until {
            let response = reply(&key, stored.clone(), Outcome::Stale);
            refresh_in_background(proxy, exchange, &uri, &headers, &primary, (key, stored));
            return Ok(response);
        }
        stale = Some((key, stored));
    }
    let fetched = match cache.flights.join(&primary) {
        Joined::Leader(leader) => {
            let fetched = fetch(proxy, exchange, &uri, &headers, &primary, stale, permit).await;
            drop(leader);
            fetched?
        }
        Joined::Follower(flight) => {
            flight.landed().await;
            let now = cache.now_ms();
            match cache.lookup(&primary, &headers) {
                Some((key, stored)) if now < stored.times.fresh_until => {
                    Fetched::Stored(key, stored, Outcome::Hit)
                }
                // What the leader got was not stored (or another variant): fetch it ourselves.
                _ => fetch(proxy, exchange, &uri, &headers, &primary, stale, permit).await?,
            }
        }
    };
    Ok(match fetched {
        Fetched::Stored(key, stored, outcome) => reply(&key, stored, outcome),
        Fetched::Passed(mut response) => {
            if head {
                *response.body_mut() = Body::empty();
            } else if let Some((compression, encoding)) = encoding {
                response = super::compress_streaming(
                    response,
                    compression,
                    encoding,
                    &exchange.route.stats,
                );
            }
            response
                .headers_mut()
                .insert(X_CACHE.clone(), Outcome::Miss.header());
            response
        }
    })
}

/// Where the `encoding` copy of the response stored at `key` is kept.
fn encoded_key(key: &str, encoding: Encoding) -> String {
    format!("{key} e:{}", encoding.token())
}

/// The `encoding` copy of `stored` (kept at `key`): from the cache when it was made from this
/// very copy, else compressed now — once, then served to everyone — and stored beside it.
/// `None` when it is not worth compressing.
fn encode_stored(
    cache: &crate::cache::ResponseCache,
    compression: &Compression,
    encoding: Encoding,
    key: &str,
    stored: &Stored,
    now: u64,
) -> Option<Stored> {
    let len = stored.body.len() as u64;
    if !compression.worth_it(stored.status, &stored.headers, Some(len)) {
        return None;
    }
    let variant_key = encoded_key(key, encoding);
    if let Some(encoded) = cache.get_at(&variant_key)
        && encoded.times == stored.times
    {
        return Some(encoded);
    }
    let body = match compression.compress(encoding, &stored.body) {
        Ok(body) if body.len() < stored.body.len() => Bytes::from(body),
        _ => return None,
    };
    let mut headers = stored.headers.clone();
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(encoding.token()),
    );
    super::weaken_etag(&mut headers);
    vary_on_accept_encoding(&mut headers);
    let encoded = Stored {
        status: stored.status,
        headers,
        body,
        times: stored.times,
        tags: stored.tags.clone(),
    };
    let t = &stored.times;
    let last = t
        .fresh_until
        .max(t.stale_while_revalidate_until)
        .max(t.stale_if_error_until);
    // As long as the copy it was made from may be served; a minute more for revalidation.
    let keep = Duration::from_millis(last.saturating_sub(now)) + Duration::from_secs(60);
    cache.store_at(&variant_key, &encoded, keep);
    Some(encoded)
}

/// The client's request as a plain GET or HEAD without a body.
fn client_request(head: bool, uri: &Uri, headers: &HeaderMap) -> Request<Body> {
    let mut request = Request::new(Body::empty());
    *request.method_mut() = if head { Method::HEAD } else { Method::GET };
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    request
}

/// Refreshes a stale entry once, in the background, while clients are served the stale copy.
fn refresh_in_background(
    proxy: &Arc<Proxy>,
    exchange: &Exchange,
    uri: &Uri,
    headers: &HeaderMap,
    primary: &str,
    stale: (String, Stored),
) {
    let Some(leader) = proxy.cache.flights.try_lead(primary) else {
        return; // a refresh is already running
    };
    let (proxy, uri, headers, primary) = (
        proxy.clone(),
        uri.clone(),
        headers.clone(),
        primary.to_owned(),
    );
    let exchange = Exchange {
        route: exchange.route.clone(),
        peer: exchange.peer,
        client_ip: exchange.client_ip,
        peer_value: exchange.peer_value.clone(),
        request_id: exchange.request_id.clone(),
        started: tokio::time::Instant::now(),
        upstream_us: std::sync::atomic::AtomicU64::new(0),
    };
    tokio::spawn(async move {
        let _leader = leader;
        if let Err(e) = fetch(
            &proxy,
            &exchange,
            &uri,
            &headers,
            &primary,
            Some(stale),
            None,
        )
        .await
        {
            tracing::debug!(key = primary, error = %e, "background refresh failed");
        }
    });
}

/// Fetches from the upstream (conditionally when a stale copy has validators), stores what may
/// be stored, and falls back to the stale copy within its `stale_if_error` window.
async fn fetch(
    proxy: &Proxy,
    exchange: &Exchange,
    uri: &Uri,
    client_headers: &HeaderMap,
    primary: &str,
    stale: Option<(String, Stored)>,
    permit: Option<OwnedSemaphorePermit>,
) -> Result<Fetched, GatewayError> {
    let route = &exchange.route;
    let policy = route
        .cache
        .as_ref()
        .expect("only caching routes fetch through the cache");
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = uri.clone();
    let mut headers = client_headers.clone();
    for name in &CONDITIONAL {
        headers.remove(name);
    }
    // keel compresses for clients itself; the stored copy is the identity encoding.
    headers.remove(header::ACCEPT_ENCODING);
    if let Some((_, stored)) = &stale {
        if let Some(etag) = stored.headers.get(header::ETAG) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        } else if let Some(modified) = stored.headers.get(header::LAST_MODIFIED) {
            headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
        }
    }
    *request.headers_mut() = headers;
    let (mut parts, body) = request.into_parts();
    proxy.rewrite_for_upstream(&mut parts, exchange);
    let sent = proxy
        .send_upstream(Request::from_parts(parts, body), exchange)
        .await;
    let cache = &proxy.cache;
    let now = cache.now_ms();
    let usable_stale =
        |stale: Option<(String, Stored)>| stale.filter(|(_, s)| now < s.times.stale_if_error_until);
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            return match usable_stale(stale) {
                Some((key, stored)) => Ok(Fetched::Stored(key, stored, Outcome::Stale)),
                None => Err(e),
            };
        }
    };
    if response.status().is_server_error()
        && let Some((key, stored)) = usable_stale(stale.clone())
    {
        return Ok(Fetched::Stored(key, stored, Outcome::Stale));
    }
    if response.status() == StatusCode::NOT_MODIFIED
        && let Some((key, mut stored)) = stale
    {
        // Still good: take the fresh headers the 304 carries, restart the clock.
        let (parts, _) = response.into_parts();
        for name in [
            header::CACHE_CONTROL,
            header::EXPIRES,
            header::DATE,
            header::ETAG,
            header::LAST_MODIFIED,
        ] {
            if let Some(value) = parts.headers.get(&name) {
                stored.headers.insert(name, value.clone());
            }
        }
        let directives = ResponseDirectives::parse(&stored.headers);
        let Some(plan) = plan(policy, &directives, &stored.headers, now) else {
            return Ok(Fetched::Stored(key, stored, Outcome::Revalidated));
        };
        stored.times = plan.times;
        cache.store_at(&key, &stored, plan.keep);
        return Ok(Fetched::Stored(key, stored, Outcome::Revalidated));
    }
    store_or_pass(
        proxy,
        exchange,
        primary,
        client_headers,
        response,
        permit,
        now,
    )
    .await
}

/// Stores a fresh upstream response if a shared cache may, and answers from it; otherwise
/// streams it through.
async fn store_or_pass(
    proxy: &Proxy,
    exchange: &Exchange,
    primary: &str,
    client_headers: &HeaderMap,
    response: Response<PooledBody>,
    permit: Option<OwnedSemaphorePermit>,
    now: u64,
) -> Result<Fetched, GatewayError> {
    let route = &exchange.route;
    let policy = route.cache.as_ref().expect("only caching routes store");
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let tags = proxy.strip_tag_headers(&mut parts.headers);
    let directives = ResponseDirectives::parse(&parts.headers);
    let vary = vary(&parts.headers);
    let plan = vary
        .as_ref()
        .filter(|_| may_store(policy, &directives, parts.status, &parts.headers))
        .and_then(|_| plan(policy, &directives, &parts.headers, now));
    // Watched from here on, whether it is stored or passed through.
    let body = exchange.watch(body, permit);
    let (Some(plan), Some(vary)) = (plan, vary) else {
        return Ok(Fetched::Passed(Response::from_parts(
            parts,
            Body::new(body),
        )));
    };
    let max = proxy.cache.max_object();
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|len| len > max)
    {
        return Ok(Fetched::Passed(Response::from_parts(
            parts,
            Body::new(body),
        )));
    }
    let body = match read_up_to(body, max).await {
        Read::Whole(bytes) => bytes,
        Read::Partial(head, rest) => {
            // Too large to store: send what was read, then the rest as it comes.
            let stream =
                futures_util::stream::once(async move { Ok(head) }).chain(rest.into_data_stream());
            return Ok(Fetched::Passed(Response::from_parts(
                parts,
                Body::from_stream(stream),
            )));
        }
        Read::Failed(e) => return Err(GatewayError::Upstream(e)),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::AGE);
    let stored = Stored {
        status: parts.status,
        headers: parts.headers,
        body,
        times: plan.times,
        tags,
    };
    let key = proxy
        .cache
        .store(primary, client_headers, &vary, &stored, plan.keep);
    Ok(Fetched::Stored(key, stored, Outcome::Miss))
}

/// The request headers a response varies on (sorted, without `Accept-Encoding`, which keel
/// negotiates itself); `None` for `Vary: *`, which no cache can match.
fn vary(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().ok()?.split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes())
                && name != header::ACCEPT_ENCODING
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// Whether a shared cache may store the response at all.
fn may_store(
    policy: &RouteCache,
    d: &ResponseDirectives,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    if !storable_status(status) || headers.contains_key(header::SET_COOKIE) {
        return false;
    }
    policy.override_upstream || !(d.no_store || d.private)
}

/// When a response stops being fresh and may be served stale, and how long the engine keeps it.
struct Plan {
    times: Times,
    keep: Duration,
}

/// The timing of a storable response; `None` when it would never be served from the cache.
fn plan(
    policy: &RouteCache,
    d: &ResponseDirectives,
    headers: &HeaderMap,
    now: u64,
) -> Option<Plan> {
    let initial_age = age(headers);
    let lifetime = if policy.override_upstream {
        policy.ttl?
    } else if d.no_cache {
        Duration::ZERO
    } else {
        d.freshness(headers).or(policy.ttl)?
    };
    let fresh = lifetime.saturating_sub(initial_age);
    let (swr, sie) = if d.must_revalidate && !policy.override_upstream {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            policy
                .stale_while_revalidate
                .max(d.stale_while_revalidate.unwrap_or_default()),
            policy
                .stale_if_error
                .max(d.stale_if_error.unwrap_or_default()),
        )
    };
    let validators =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    // Kept past its freshness for revalidation (as long again, at least a minute) when it has
    // validators, and for its stale windows.
    let revalidation = if validators {
        fresh.max(Duration::from_secs(60))
    } else {
        Duration::ZERO
    };
    if fresh.is_zero() && swr.is_zero() && sie.is_zero() && !validators {
        return None;
    }
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let fresh_until = now.saturating_add(ms(fresh));
    Some(Plan {
        times: Times {
            stored_at: now,
            fresh_until,
            stale_while_revalidate_until: fresh_until.saturating_add(ms(swr)),
            stale_if_error_until: fresh_until.saturating_add(ms(sie)),
            initial_age: u32::try_from(initial_age.as_secs()).unwrap_or(u32::MAX),
        },
        keep: fresh + swr.max(sie).max(revalidation),
    })
}

enum Read<B> {
    Whole(Bytes),
    Partial(Bytes, B),
    Failed(String),
}

/// Reads `body` whole if it is at most `max` bytes; else returns what was read and the rest.
async fn read_up_to<B>(mut body: B, max: usize) -> Read<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buffer = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Read::Whole(buffer.freeze()),
            Some(Err(e)) => return Read::Failed(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buffer.extend_from_slice(&data);
                    if buffer.len() > max {
                        return Read::Partial(buffer.freeze(), body);
                    }
                }
            }
        }
    }
}

/// The response for a client from a stored copy: `304` when the client's own validators match,
/// else the stored response with `Age` and `X-Cache` (and no body for HEAD). `room`: how many
/// headers keel adds to it on its way out, these two included (`Route::added_headers`).
fn answer(
    stored: Stored,
    outcome: Outcome,
    now: u64,
    head: bool,
    request: &HeaderMap,
    policy: &RouteCache,
    room: usize,
) -> Response<Body> {
    let Stored {
        status,
        mut headers,
        body,
        times,
        ..
    } = stored;
    headers.reserve(room);
    let age_secs = now.saturating_sub(times.stored_at) / 1000 + u64::from(times.initial_age);
    headers.insert(header::AGE, HeaderValue::from(age_secs));
    headers.insert(X_CACHE.clone(), outcome.header());
    if let Some(cc) = &policy.browser_cache_control {
        headers.insert(header::CACHE_CONTROL, cc.clone());
    }
    if status == StatusCode::OK && not_modified(request, &headers) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::ETAG,
            header::CACHE_CONTROL,
            header::EXPIRES,
            header::DATE,
            header::VARY,
            header::LAST_MODIFIED,
            header::AGE,
            X_CACHE.clone(),
        ] {
            if let Some(value) = headers.get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        return response;
    }
    let body = if head {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Body::empty()
    } else {
        Body::from(body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// An entity tag without surrounding space or its weakness mark (`W/`).
fn opaque_tag(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// Whether the client's `If-None-Match` (or, without it, `If-Modified-Since`) says its copy is
/// current (RFC 9110 §13.1: weak comparison for `If-None-Match`).
fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(candidates) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|e| e.to_str().ok()) else {
            return false;
        };
        let Ok(candidates) = candidates.to_str() else {
            return false;
        };
        let etag = opaque_tag(etag);
        return candidates
            .split(',')
            .any(|c| c.trim() == "*" || opaque_tag(c) == etag);
    }
    // The stored date is parsed only when the client sent one: most requests send neither,
    // and parsing a date is a measurable part of a hit.
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| http_date(v.as_bytes()))
    else {
        return false;
    };
    stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| http_date(v.as_bytes()))
        .is_some_and(|modified| modified <= since)
}
