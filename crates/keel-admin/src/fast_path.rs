//! A shortcut for the hottest request keel serves: `GET /api/v1/cache/keys/{key}` by an
//! authenticated caller.
//!
//! [`request_context`](crate::request::request_context) asks [`CacheReadFastPath::serve`]
//! before handing a request to the router's inner layers. It answers only a plain GET of a key
//! whose path needs no percent-decoding, with credentials that authenticate — exactly what the
//! `get_key` route would answer, through the same function — and declines everything else, which
//! then takes the normal path (so a missing or bad token still gets the router's 401). What it
//! skips is the nested router, the authentication middleware and the extractors, about a tenth
//! of the CPU a cache hit costs.

use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::AdminState;
use crate::cache_service::CacheService;
use crate::routes::cache::read_key;

/// The route template the fast path answers for, as metrics label it.
pub(crate) const ROUTE: &str = "/api/v1/cache/keys/{key}";
const PREFIX: &str = "/api/v1/cache/keys/";

/// What the fast path needs: the authenticator (in the admin state) and the cache.
#[derive(Clone)]
pub struct CacheReadFastPath {
    state: AdminState,
    cache: CacheService,
}

impl CacheReadFastPath {
    /// A fast path reading `cache`, authenticating with `state`'s authenticator.
    pub fn new(state: AdminState, cache: CacheService) -> Self {
        Self { state, cache }
    }

    /// The response, when the request is one the fast path answers.
    pub(crate) async fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response> {
        if method != Method::GET {
            return None;
        }
        let key = uri.path().strip_prefix(PREFIX)?;
        if key.is_empty() || key.contains(['/', '%']) {
            return None;
        }
        let authorization = headers.get(header::AUTHORIZATION)?;
        // Every authenticated role may read (viewer is the least).
        self.state
            .authenticator()
            .authenticate(Some(authorization.as_bytes()))
            .ok()?;
        let if_none_match = headers.get(header::IF_NONE_MATCH);
        Some(match read_key(&self.cache, key, if_none_match).await {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        })
    }
}
