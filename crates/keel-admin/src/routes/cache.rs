//! `/api/v1/cache/…`: the cache engine over HTTP.
//!
//! Reads need `viewer`, writes `worker`, reset `admin`. Values travel as raw bytes on the
//! single-key routes (the `Content-Type` is remembered) and as UTF-8 or base64 strings in the
//! bulk routes.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as CURSOR};
use keel_cache::{CacheError, CacheValue, Glob, SetOptions, SetOutcome};
use keel_core::{HumanDuration, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{AdminRole, Authorized, ViewerRole, WorkerRole};
use crate::cache_service::CacheService;
use crate::json::ApiJson;

/// The `Keel-TTL` request header: a TTL for `PUT`.
pub(crate) const KEEL_TTL: &str = "keel-ttl";
/// The `Keel-TTL-Remaining` response header: whole seconds left (absent = never expires).
pub(crate) const KEEL_TTL_REMAINING: &str = "keel-ttl-remaining";
/// Most keys or entries in one bulk request.
pub(crate) const MAX_BATCH: usize = 1000;
/// Most keys in one listing page.
pub(crate) const MAX_PAGE: usize = 1000;

pub(crate) fn problem_for(e: &CacheError) -> Problem {
    let status = match e {
        CacheError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        CacheError::InBatch { source, .. }
            if matches!(**source, CacheError::ValueTooLarge { .. }) =>
        {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let detail = match e {
        CacheError::InBatch { index, source } => format!("entries[{index}]: {source}"),
        other => other.to_string(),
    };
    Problem::status(status).with_detail(detail)
}

/// A TTL as the API accepts it: `"30s"`, `"5m"`, `"0"` (never expires), or bare seconds.
fn parse_ttl(text: &str, what: &str) -> Result<Duration, Problem> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| Problem::bad_request(format!("{what}: {t:?} is too large")));
    }
    t.parse::<HumanDuration>()
        .map(HumanDuration::get)
        .map_err(|e| Problem::bad_request(format!("{what}: {e}; \"0\" means no expiry")))
}

fn parse_tags(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct PutQuery {
    /// Time to live, e.g. `30s`; `0` = never expires; default `cache.default_ttl`. Also the
    /// `Keel-TTL` header.
    ttl: Option<String>,
    /// Comma-separated tags.
    tags: Option<String>,
}

/// Stores the request body under `key`, remembering its `Content-Type`. 201 when the key was
/// new, 204 when it replaced a value.
#[utoipa::path(put, path = "/cache/keys/{key}", tag = "cache", security(("bearer" = [])),
    params(("key" = String, Path, description = "1–512 bytes, no control characters; percent-encode `/`"), PutQuery),
    request_body(content = Vec<u8>, content_type = "*/*"),
    responses((status = 201, description = "Created"), (status = 204, description = "Replaced"),
              (status = 400, body = Problem), (status = 413, body = Problem)))]
pub(crate) async fn put_key(
    _: Authorized<WorkerRole>,
    State(cache): State<CacheService>,
    Path(key): Path<String>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let header_ttl = headers
        .get(KEEL_TTL)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let ttl = match (query.ttl.as_deref(), header_ttl) {
        (Some(q), _) => Some(parse_ttl(q, "ttl")?),
        (None, Some(h)) => Some(parse_ttl(h, "Keel-TTL header")?),
        (None, None) => None,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let options = SetOptions {
        ttl,
        content_type,
        tags: query.tags.as_deref().map(parse_tags).unwrap_or_default(),
        ..SetOptions::default()
    };
    match cache
        .set(&key, body, options)
        .await
        .map_err(|e| problem_for(&e))?
    {
        SetOutcome::Created => Ok(StatusCode::CREATED),
        SetOutcome::Replaced => Ok(StatusCode::NO_CONTENT),
    }
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == etag)
}

/// The ETag header value: the 16-hex-digit validator in quotes, formatted without allocating.
fn etag_header(etag: u64) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    for (i, byte) in out[1..17].iter_mut().enumerate() {
        *byte = HEX[((etag >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// Adds `ETag` and `Keel-TTL-Remaining` to `response`.
fn add_value_headers(response: &mut Response, etag: &[u8; 18], value: &CacheValue) {
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_bytes(etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(ttl) = value.ttl_remaining() {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        headers.insert(KEEL_TTL_REMAINING, HeaderValue::from(secs));
    }
}

/// The request's `If-None-Match` alone (the `HeaderMap` extractor would copy every header).
pub(crate) struct IfNoneMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

/// The stored value with its `Content-Type`, `ETag` and `Keel-TTL-Remaining` (whole seconds;
/// absent when it never expires). 304 when `If-None-Match` matches. `HEAD` answers the same
/// without the body. 404 on a miss.
#[utoipa::path(get, path = "/cache/keys/{key}", tag = "cache", security(("bearer" = [])),
    params(("key" = String, Path, description = "The key")),
    responses((status = 200, description = "The value", content_type = "*/*"), (status = 304, description = "Not modified"),
              (status = 404, body = Problem)))]
pub(crate) async fn get_key(
    _: Authorized<ViewerRole>,
    State(cache): State<CacheService>,
    Path(key): Path<String>,
    IfNoneMatch(if_none_match): IfNoneMatch,
) -> Result<Response, Problem> {
    read_key(&cache, &key, if_none_match.as_ref()).await
}

/// The answer to a read of `key`: 200 with the value and its headers, 304 when
/// `if_none_match` matches its ETag, 404 on a miss. Shared by the handler and the request
/// fast path (see `request::CacheReadFastPath`).
pub(crate) async fn read_key(
    cache: &CacheService,
    key: &str,
    if_none_match: Option<&HeaderValue>,
) -> Result<Response, Problem> {
    keel_cache::validate_key(key).map_err(|e| problem_for(&e))?;
    let Some(value) = cache.get(key).await else {
        return Err(Problem::not_found(format!("no live entry for key {key:?}")));
    };
    let etag = etag_header(value.etag);
    let not_modified = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| etag_matches(inm, &value.etag_hex()));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        const OCTETS: HeaderValue = HeaderValue::from_static("application/octet-stream");
        let content_type = value
            .content_type_bytes()
            .map_or(Ok(OCTETS), HeaderValue::from_maybe_shared)
            .unwrap_or(OCTETS);
        ([(header::CONTENT_TYPE, content_type)], value.bytes.clone()).into_response()
    };
    add_value_headers(&mut response, &etag, &value);
    Ok(response)
}

/// Deletes `key`: 204, or 404 when there was no live entry.
#[utoipa::path(delete, path = "/cache/keys/{key}", tag = "cache", security(("bearer" = [])),
    params(("key" = String, Path, description = "The key")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem)))]
pub(crate) async fn delete_key(
    _: Authorized<WorkerRole>,
    State(cache): State<CacheService>,
    Path(key): Path<String>,
) -> Result<StatusCode, Problem> {
    keel_cache::validate_key(&key).map_err(|e| problem_for(&e))?;
    if cache.delete(&key).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no live entry for key {key:?}")))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MgetBody {
    /// Up to 1000 keys.
    keys: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FoundValue {
    key: String,
    /// The value: UTF-8 text, or base64 when it is not valid UTF-8.
    value: String,
    /// `utf8` or `base64`.
    encoding: &'static str,
    content_type: Option<String>,
    /// Milliseconds left before it expires; `null` = never.
    ttl_remaining_ms: Option<u64>,
}

/// Refuses a bulk request with more than [`MAX_BATCH`] items.
fn check_batch(field: &str, len: usize) -> Result<(), Problem> {
    if len > MAX_BATCH {
        return Err(Problem::bad_request(format!(
            "{field}: at most {MAX_BATCH} per request, got {len}"
        )));
    }
    Ok(())
}

/// Reads many keys at once: one item per key, in order, `null` for a miss.
#[utoipa::path(post, path = "/cache/mget", tag = "cache", security(("bearer" = [])), request_body = MgetBody,
    responses((status = 200, description = "`{\"values\": [FoundValue | null]}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn mget(
    _: Authorized<ViewerRole>,
    State(cache): State<CacheService>,
    ApiJson(body): ApiJson<MgetBody>,
) -> Result<Json<Value>, Problem> {
    check_batch("keys", body.keys.len())?;
    for (i, key) in body.keys.iter().enumerate() {
        keel_cache::validate_key(key)
            .map_err(|e| Problem::bad_request(format!("keys[{i}]: {e}")))?;
    }
    let values: Vec<Option<FoundValue>> = cache
        .get_many(&body.keys)
        .await
        .into_iter()
        .zip(&body.keys)
        .map(|(v, key)| {
            v.map(|v| {
                let (value, encoding) = match std::str::from_utf8(&v.bytes) {
                    Ok(text) => (text.to_owned(), "utf8"),
                    Err(_) => (B64.encode(&v.bytes), "base64"),
                };
                FoundValue {
                    key: key.clone(),
                    value,
                    encoding,
                    content_type: v.content_type().map(str::to_owned),
                    ttl_remaining_ms: v.ttl_remaining().map(|t| t.as_millis() as u64),
                }
            })
        })
        .collect();
    Ok(Json(json!({ "values": values })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MsetEntry {
    key: String,
    /// The value as text (`encoding: "utf8"`, the default) or base64.
    value: String,
    /// `"30s"`, `"0"` (never expires) or seconds as a number; default `cache.default_ttl`.
    #[schema(value_type = Option<String>)]
    ttl: Option<Value>,
    #[serde(default)]
    tags: Vec<String>,
    /// `utf8` (default) or `base64`.
    encoding: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MsetBody {
    /// Up to 1000 entries; all are validated before any is written.
    entries: Vec<MsetEntry>,
}

fn decode_entry(i: usize, e: MsetEntry) -> Result<(String, Bytes, SetOptions), Problem> {
    let at =
        |field: &str, msg: String| Problem::bad_request(format!("entries[{i}].{field}: {msg}"));
    let bytes = match e.encoding.as_deref().unwrap_or("utf8") {
        "utf8" => Bytes::from(e.value),
        "base64" => B64
            .decode(e.value.as_bytes())
            .map(Bytes::from)
            .map_err(|err| at("value", format!("not valid base64: {err}")))?,
        other => return Err(at("encoding", format!("{other:?} is not utf8 or base64"))),
    };
    let ttl = match e.ttl {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_ttl(&s, &format!("entries[{i}].ttl"))?),
        Some(Value::Number(n)) => {
            Some(Duration::from_secs(n.as_u64().ok_or_else(|| {
                at("ttl", "must be a whole number of seconds ≥ 0".into())
            })?))
        }
        Some(_) => {
            return Err(at(
                "ttl",
                "must be a string like \"30s\" or a number of seconds".into(),
            ));
        }
    };
    Ok((
        e.key,
        bytes,
        SetOptions {
            ttl,
            content_type: e.content_type,
            tags: e.tags,
            ..SetOptions::default()
        },
    ))
}

/// Writes many entries, all or nothing: every entry is validated before any is written.
#[utoipa::path(post, path = "/cache/mset", tag = "cache", security(("bearer" = [])), request_body = MsetBody,
    responses((status = 200, description = "`{\"written\", \"created\", \"replaced\"}`", body = Object),
              (status = 400, body = Problem), (status = 413, body = Problem)))]
pub(crate) async fn mset(
    _: Authorized<WorkerRole>,
    State(cache): State<CacheService>,
    ApiJson(body): ApiJson<MsetBody>,
) -> Result<Json<Value>, Problem> {
    check_batch("entries", body.entries.len())?;
    let entries = body
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| decode_entry(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = cache.set_many(entries).await.map_err(|e| problem_for(&e))?;
    let created = outcomes
        .iter()
        .filter(|o| **o == SetOutcome::Created)
        .count();
    Ok(Json(
        json!({"written": outcomes.len(), "created": created, "replaced": outcomes.len() - created}),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct ListQuery {
    /// Redis glob pattern (`*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\` escapes); default `*`.
    pattern: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Keys per page, 1–1000; default 100.
    limit: Option<usize>,
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, Problem> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            CURSOR
                .decode(c.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "cursor: not a cursor this API returned; start without one",
                    )
                })
        })
        .transpose()
}

/// Live keys matching `pattern` (ordered within each shard of the index, as Redis `SCAN`), with
/// size and remaining TTL, a page at a time.
/// Pages may be shorter than `limit` (each call examines a bounded number of keys); continue
/// with `next_cursor` until it is `null`.
#[utoipa::path(get, path = "/cache/keys", tag = "cache", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "`{\"keys\": [{key, size, ttl_remaining_ms}], \"next_cursor\"}`", body = Object),
              (status = 400, body = Problem)))]
pub(crate) async fn list_keys(
    _: Authorized<ViewerRole>,
    State(cache): State<CacheService>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::bad_request(format!(
            "limit: must be between 1 and {MAX_PAGE}"
        )));
    }
    let cursor = decode_cursor(query.cursor.as_deref())?;
    let pattern = Glob::new(query.pattern.as_deref().unwrap_or("*"));
    let page = cache.scan(&pattern, cursor.as_deref(), limit).await;
    let keys: Vec<Value> = page
        .keys
        .iter()
        .map(|k| json!({"key": &*k.key, "size": k.size, "ttl_remaining_ms": k.ttl_remaining.map(|t| t.as_millis() as u64)}))
        .collect();
    Ok(Json(
        json!({"keys": keys, "next_cursor": page.next_cursor.map(|c| CURSOR.encode(c))}),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct DeleteQuery {
    /// Redis glob pattern of the keys to delete (required).
    pattern: Option<String>,
    /// Must be `true` when the pattern matches every key (`*`).
    #[serde(default)]
    confirm: bool,
}

/// Deletes every key matching `pattern`, in batches that never hold the keyspace.
#[utoipa::path(delete, path = "/cache/keys", tag = "cache", security(("bearer" = [])), params(DeleteQuery),
    responses((status = 200, description = "`{\"deleted\": n}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn delete_keys(
    _: Authorized<WorkerRole>,
    State(cache): State<CacheService>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<Value>, Problem> {
    let Some(pattern) = query.pattern.filter(|p| !p.is_empty()) else {
        return Err(Problem::bad_request(
            "pattern: required, e.g. pattern=user:123:*",
        ));
    };
    let glob = Glob::new(&pattern);
    if glob.matches_everything() && !query.confirm {
        return Err(Problem::bad_request(format!(
            "pattern {pattern:?} matches every key; add confirm=true to delete them all (or POST /api/v1/cache/reset)"
        )));
    }
    let deleted = cache.delete_matching(&glob).await;
    Ok(Json(json!({ "deleted": deleted })))
}

/// Deletes every entry carrying `tag`.
#[utoipa::path(delete, path = "/cache/tags/{tag}", tag = "cache", security(("bearer" = [])),
    params(("tag" = String, Path, description = "The tag")),
    responses((status = 200, description = "`{\"deleted\": n}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn delete_tag(
    _: Authorized<WorkerRole>,
    State(cache): State<CacheService>,
    Path(tag): Path<String>,
) -> Result<Json<Value>, Problem> {
    keel_cache::validate_tag(&tag).map_err(|e| problem_for(&e))?;
    Ok(Json(json!({ "deleted": cache.invalidate_tag(&tag).await })))
}

/// Clears the whole cache.
#[utoipa::path(post, path = "/cache/reset", tag = "cache", security(("bearer" = [])),
    responses((status = 200, description = "`{\"deleted\": n}`", body = Object), (status = 403, body = Problem)))]
pub(crate) async fn reset(
    _: Authorized<AdminRole>,
    State(cache): State<CacheService>,
) -> Json<Value> {
    Json(json!({ "deleted": cache.reset().await }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    /// `instance` (default): this instance; `cluster`: every instance sharing the Redis, summed.
    scope: Option<String>,
}

/// Hits, misses, hit ratios (overall, 1 min, 5 min), sets, deletes, evictions by cause,
/// entries, logical and stored bytes, max memory; with Redis also the Redis tier and the
/// invalidation broadcast. `?scope=cluster` sums every instance sharing the Redis.
#[utoipa::path(get, path = "/cache/stats", tag = "cache", security(("bearer" = [])), params(StatsQuery),
    responses((status = 200, description = "Cache statistics", body = Object), (status = 400, body = Problem),
              (status = 503, body = Problem)))]
pub(crate) async fn stats(
    _: Authorized<ViewerRole>,
    State(cache): State<CacheService>,
    Query(query): Query<StatsQuery>,
) -> Result<Json<Value>, Problem> {
    match (query.scope.as_deref().unwrap_or("instance"), &cache) {
        ("instance", _) => Ok(Json(cache.stats())),
        ("cluster", CacheService::Tiered(tiered)) => match tiered.cluster_stats().await {
            Ok(stats) => Ok(Json(serde_json::to_value(stats).unwrap_or_default())),
            Err(e) => Err(Problem::status(StatusCode::SERVICE_UNAVAILABLE)
                .with_detail(format!("cluster statistics live in Redis: {e}"))),
        },
        ("cluster", CacheService::Memory(_)) => Err(Problem::bad_request(
            "scope=cluster needs Redis ([redis] url): without it this instance is the whole cache",
        )),
        (other, _) => Err(Problem::bad_request(format!(
            "scope: {other:?} is not instance or cluster"
        ))),
    }
}
