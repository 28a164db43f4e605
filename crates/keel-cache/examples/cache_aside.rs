//! Cache-aside in an axum handler with `get_or_load`.
//!
//! ```sh
//! cargo run -p keel-cache --example cache_aside
//! curl -i localhost:3000/users/7     # first call: loads (50 ms), X-Cache: MISS-LOADED
//! curl -i localhost:3000/users/7     # then: from the cache, X-Cache: HIT
//! curl -s localhost:3000/stats
//! ```
//!
//! A hundred concurrent first requests for the same user still run the loader once.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, LoadOptions, SetOptions};

/// Stands in for a database query.
async fn load_user(id: u64) -> Result<Bytes, String> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if id == 0 {
        return Err("user 0 does not exist".to_owned());
    }
    Ok(Bytes::from(format!(r#"{{"id":{id},"name":"user-{id}"}}"#)))
}

async fn user(State(cache): State<Cache>, Path(id): Path<u64>) -> Response {
    let key = format!("user:{id}");
    let was_cached = cache.get(&key).is_some();
    let options = LoadOptions {
        set: SetOptions {
            ttl: Some(Duration::from_secs(60)),
            content_type: Some("application/json".to_owned()),
            tags: vec!["users".to_owned()],
            ..SetOptions::default()
        },
        // Remember failures briefly so a missing user does not hit the database on every call.
        negative_ttl: Some(Duration::from_secs(5)),
    };
    match cache.get_or_load(&key, options, || load_user(id)).await {
        Ok(value) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static("x-cache"),
                    if was_cached { "HIT" } else { "MISS-LOADED" },
                ),
            ],
            value.bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn stats(State(cache): State<Cache>) -> Json<keel_cache::CacheStats> {
    Json(cache.stats())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cache = Cache::new(CacheConfig::default());
    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/stats", get(stats))
        .with_state(cache);
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    axum::serve(listener, app).await
}
