//! Compression through the gateway, decoded by a real client for each encoding: streamed
//! responses, cached responses compressed once, and what is left alone.

mod support;

use keel_gateway::{CachePolicy, CompressPolicy, GatewayConfig, RoutePolicy, RouteRule};
use support::{App, Running, gateway_on_mock_clock};

fn json_body() -> String {
    let items: Vec<String> = (0..200)
        .map(|i| format!("{{\"id\":{i},\"name\":\"habit {i}\",\"done\":false}}"))
        .collect();
    format!("[{}]", items.join(","))
}

/// A client that asks for (and decodes) exactly one encoding.
fn decoding_client(encoding: &str) -> reqwest::Client {
    let b = reqwest::Client::builder().pool_max_idle_per_host(0);
    match encoding {
        "gzip" => b.no_brotli().no_zstd(),
        "br" => b.no_gzip().no_zstd(),
        "zstd" => b.no_gzip().no_brotli(),
        other => panic!("{other}"),
    }
    .build()
    .unwrap()
}

/// A client that decodes nothing: what keel sent, as it was sent.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .build()
        .unwrap()
}

async fn raw(gw: &Running, path: &str, accept: &str) -> reqwest::Response {
    raw_client()
        .get(gw.url(path))
        .header("accept-encoding", accept)
        .send()
        .await
        .unwrap()
}

fn json_app(app: &App, cache_control: &str) {
    let cache_control = cache_control.to_owned();
    app.script(move |s| {
        s.body = json_body();
        s.headers = vec![("content-type".into(), "application/json".into())];
        if !cache_control.is_empty() {
            s.headers.push(("cache-control".into(), cache_control));
        }
    });
}

fn rule(prefix: &str, f: impl FnOnce(&mut RoutePolicy)) -> RouteRule {
    let mut policy = RoutePolicy::default();
    f(&mut policy);
    RouteRule {
        prefix: Some(prefix.into()),
        policy,
        ..RouteRule::default()
    }
}

#[tokio::test]
async fn streamed_responses_are_compressed_in_each_encoding() {
    let app = App::start().await;
    json_app(&app, "");
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    for encoding in ["gzip", "br", "zstd"] {
        let response = decoding_client(encoding)
            .get(gw.url("/r/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.text().await.unwrap(), json_body(), "{encoding}");
        let sent = raw(&gw, "/r/list", encoding).await;
        assert_eq!(sent.headers()["content-encoding"], encoding);
        assert_eq!(sent.headers()["vary"], "accept-encoding");
        assert!(!sent.headers().contains_key("content-length"));
        let len = sent.bytes().await.unwrap().len();
        assert!(len < json_body().len() / 4, "{encoding}: {len} bytes");
    }
    // No Accept-Encoding: as the app sent it.
    let plain = raw_client().get(gw.url("/r/list")).send().await.unwrap();
    assert!(!plain.headers().contains_key("content-encoding"));
    assert_eq!(plain.text().await.unwrap(), json_body());
}

#[tokio::test]
async fn q_values_and_the_route_s_preference_choose() {
    let app = App::start().await;
    json_app(&app, "");
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    let pick = |accept: &'static str| {
        let gw = &gw;
        async move {
            raw(gw, "/r/x", accept)
                .await
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(pick("gzip, deflate, br, zstd").await.as_deref(), Some("br"));
    assert_eq!(pick("gzip;q=1.0, br;q=0.5").await.as_deref(), Some("gzip"));
    assert_eq!(pick("br;q=0, zstd").await.as_deref(), Some("zstd"));
    assert_eq!(pick("identity").await, None);
}

#[tokio::test]
async fn cached_responses_are_compressed_once_and_served_to_many() {
    let app = App::start().await;
    json_app(&app, "max-age=60");
    let gw = gateway_on_mock_clock(&app.url(), |_| {}).await;
    let first = raw(&gw, "/r/cached", "br").await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["content-encoding"], "br");
    let first_bytes = first.bytes().await.unwrap();
    let again = raw(&gw, "/r/cached", "br").await;
    assert_eq!(again.headers()["x-cache"], "HIT");
    assert_eq!(
        again.headers()["content-length"],
        first_bytes.len().to_string().as_str()
    );
    assert_eq!(
        again.bytes().await.unwrap(),
        first_bytes,
        "the same compressed copy"
    );
    for encoding in ["gzip", "zstd", "br"] {
        let r = decoding_client(encoding)
            .get(gw.url("/r/cached"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT");
        assert_eq!(r.text().await.unwrap(), json_body(), "{encoding}");
    }
    let identity = raw_client().get(gw.url("/r/cached")).send().await.unwrap();
    assert_eq!(identity.headers()["x-cache"], "HIT");
    assert!(!identity.headers().contains_key("content-encoding"));
    assert_eq!(identity.text().await.unwrap(), json_body());
    assert_eq!(app.hits(), 1);
    // The app was asked for the identity encoding.
    let asked = app.script.lock().unwrap().last_request.clone();
    assert!(
        !asked.iter().any(|(k, _)| k == "accept-encoding"),
        "{asked:?}"
    );
}

#[tokio::test]
async fn what_is_left_alone() {
    let app = App::start().await;
    let gw = gateway_on_mock_clock(&app.url(), |c: &mut GatewayConfig| {
        c.routes = vec![
            rule("/r/off", |p| {
                p.compress = Some(CompressPolicy {
                    enabled: false,
                    ..CompressPolicy::default()
                })
            }),
            rule("/r/nocache", |p| {
                p.cache = Some(CachePolicy {
                    enabled: false,
                    ..CachePolicy::default()
                })
            }),
        ]
    })
    .await;
    let encoding = |r: &reqwest::Response| r.headers().get("content-encoding").cloned();
    // Too small.
    app.script(|s| {
        s.body = "{\"tiny\":true}".into();
        s.headers = vec![("content-type".into(), "application/json".into())];
    });
    assert_eq!(encoding(&raw(&gw, "/r/small", "gzip").await), None);
    // Not a listed type.
    app.script(|s| {
        s.body = "x".repeat(5000);
        s.headers = vec![("content-type".into(), "image/png".into())];
    });
    assert_eq!(encoding(&raw(&gw, "/r/png", "gzip").await), None);
    // no-transform.
    app.script(|s| {
        s.headers = vec![
            ("content-type".into(), "text/plain".into()),
            ("cache-control".into(), "no-transform".into()),
        ]
    });
    assert_eq!(encoding(&raw(&gw, "/r/nt", "gzip").await), None);
    // Already encoded by the app: passed as it is, not encoded twice.
    app.script(|s| {
        s.body = "pretend-gzip".repeat(200);
        s.headers = vec![
            ("content-type".into(), "text/plain".into()),
            ("content-encoding".into(), "gzip".into()),
        ]
    });
    let r = raw(&gw, "/r/nocache/enc", "br, gzip").await;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.text().await.unwrap(), "pretend-gzip".repeat(200));
    // Compression off for the route.
    json_app(&app, "");
    assert_eq!(encoding(&raw(&gw, "/r/off/x", "gzip").await), None);
    // HEAD carries no body to compress.
    let head = raw_client()
        .head(gw.url("/r/list"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(encoding(&head), None);
}
