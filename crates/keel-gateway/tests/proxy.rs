//! The proxy against a real upstream app: forwarding, header rewriting, limits, timeouts,
//! streaming with bounded memory, and WebSocket passthrough.

mod support;

use futures_util::{SinkExt, StreamExt};
use keel_core::ByteSize;
use keel_gateway::RouteRule;
use reqwest::StatusCode;
use serde_json::Value;
use support::{App, client, gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn forwards_requests_and_rewrites_headers_both_ways() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |_| {}).await;
    let response = client()
        .post(format!("http://{gw}/echo/a/b?x=1&y=2"))
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 24);
    let seen = json(response).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/echo/a/b?x=1&y=2");
    assert_eq!(seen["body_bytes"], 5);
    let h = &seen["headers"];
    assert_eq!(h["x-custom"], "kept");
    assert!(
        h.get("x-drop-me").is_none(),
        "headers named in Connection are dropped"
    );
    assert_eq!(h["x-request-id"], id.as_str());
    // The peer is not a trusted proxy: its forwarding claims are replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.to_string().as_str());
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(
        h["host"],
        gw.to_string().as_str(),
        "the client's Host is kept"
    );

    // A sensible client request id is kept.
    let response = client()
        .get(format!("http://{gw}/echo"))
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-123");
    assert_eq!(json(response).await["headers"]["x-request-id"], "trace-123");
}

#[tokio::test]
async fn forwarding_headers_from_trusted_proxies_are_believed() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
        c.preserve_host = false;
    })
    .await;
    let seen = json(
        client()
            .get(format!("http://{gw}/echo"))
            .header("x-forwarded-for", "203.0.113.9, 127.0.0.2")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "shop.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let h = &seen["headers"];
    assert_eq!(h["x-real-ip"], "203.0.113.9");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.2, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(
        h["host"],
        app.addr.to_string().as_str(),
        "preserve_host = false"
    );
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_whether_announced_or_streamed() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.max_body = ByteSize::kib(64);
        c.routes = vec![RouteRule {
            prefix: Some("/upload".into()),
            policy: keel_gateway::RoutePolicy {
                max_body: Some(ByteSize(10)),
                ..Default::default()
            },
            ..RouteRule::default()
        }];
    })
    .await;
    let announced = client()
        .post(format!("http://{gw}/upload"))
        .body("x".repeat(11))
        .send()
        .await
        .unwrap();
    assert_eq!(announced.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        announced.headers()["content-type"],
        "application/problem+json"
    );
    let problem = json(announced).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("10-byte limit"),
        "{problem}"
    );
    assert!(problem["request_id"].is_string());

    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 32 * 1024]))),
    );
    let streamed = client()
        .post(format!("http://{gw}/echo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let fine = client()
        .post(format!("http://{gw}/upload"))
        .body("x".repeat(10))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.text().await.unwrap(), "10");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_problem() {
    // A port nothing listens on: bind, note it, close.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = gateway(&url, |_| {}).await;
    let response = client().get(format!("http://{gw}/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let problem = json(response).await;
    assert_eq!(problem["type"], "urn:keel:problem:upstream-unreachable");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be reached")
    );
}

// Paused time: the gateway's timer fires as soon as everything waits, so the 504 comes at once
// and without a real wait.
#[tokio::test(start_paused = true)]
async fn a_silent_upstream_is_a_504_after_the_read_timeout() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.read_timeout = keel_core::HumanDuration::from_secs(7);
    })
    .await;
    let response = client()
        .get(format!("http://{gw}/hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let problem = json(response).await;
    assert_eq!(problem["type"], "urn:keel:problem:upstream-timeout");
    assert!(
        problem["detail"].as_str().unwrap().contains("7s"),
        "{problem}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_coming_is_cut_off_after_the_read_timeout() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.read_timeout = keel_core::HumanDuration::from_secs(7);
    })
    .await;
    let mut response = client()
        .get(format!("http://{gw}/trickle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.chunk().await.unwrap().unwrap(), "first piece");
    assert!(
        response.chunk().await.is_err(),
        "the response is cut off, not left hanging"
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_bounds_the_whole_exchange() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.routes = vec![RouteRule {
            prefix: Some("/trickle".into()),
            policy: keel_gateway::RoutePolicy {
                timeout: Some(keel_core::HumanDuration::from_secs(3)),
                read_timeout: Some(keel_core::HumanDuration::from_secs(600)),
                ..Default::default()
            },
            ..RouteRule::default()
        }];
    })
    .await;
    let mut response = client()
        .get(format!("http://{gw}/trickle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.chunk().await.unwrap().unwrap(), "first piece");
    assert!(response.chunk().await.is_err());
    let hang = client()
        .get(format!("http://{gw}/hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        hang.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "the default rule's 60s read timeout"
    );
}

#[tokio::test]
async fn a_route_at_its_concurrency_cap_answers_503_at_once() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.routes = vec![RouteRule {
            name: Some("held".into()),
            prefix: Some("/held".into()),
            policy: keel_gateway::RoutePolicy {
                max_concurrent: Some(1),
                ..Default::default()
            },
            ..RouteRule::default()
        }];
    })
    .await;
    let first = tokio::spawn(client().get(format!("http://{gw}/held")).send());
    // Once the first request reached the app it holds the route's only slot.
    app.arrived.notified().await;
    let refused = client()
        .get(format!("http://{gw}/held"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem = json(refused).await;
    assert!(problem["detail"].as_str().unwrap().contains("route held"));
    // Other routes are not capped.
    let other = client()
        .get(format!("http://{gw}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    app.release.notify_one();
    assert_eq!(
        first.await.unwrap().unwrap().text().await.unwrap(),
        "released"
    );
}

#[tokio::test]
async fn security_headers_are_added_where_a_rule_asks() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| {
        c.default.security_headers = Some(true);
        c.routes = vec![RouteRule {
            prefix: Some("/echo/plain".into()),
            policy: keel_gateway::RoutePolicy {
                security_headers: Some(false),
                ..Default::default()
            },
            ..RouteRule::default()
        }];
    })
    .await;
    let secured = client()
        .get(format!("http://{gw}/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(secured.headers()["x-content-type-options"], "nosniff");
    assert_eq!(secured.headers()["x-frame-options"], "DENY");
    assert!(secured.headers().contains_key("strict-transport-security"));
    assert!(secured.headers().contains_key("referrer-policy"));
    let plain = client()
        .get(format!("http://{gw}/echo/plain"))
        .send()
        .await
        .unwrap();
    assert!(!plain.headers().contains_key("x-frame-options"));
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |c| c.max_header_size = ByteSize::kib(8)).await;
    let response = client()
        .get(format!("http://{gw}/echo"))
        .header("x-big", "v".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    // A WebSocket echo server as the upstream.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        ws.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    let gw = gateway(&upstream, |_| {}).await;
    let stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{gw}/socket"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    for text in ["hello", "through", "keel"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn http2_clients_with_prior_knowledge_are_served() {
    let app = App::start().await;
    let gw = gateway(&app.url(), |_| {}).await;
    // The HTTP/2 connection preface, a SETTINGS frame, then nothing else: the gateway answers
    // with its own SETTINGS frame (type 0x4), which an HTTP/1-only server would not.
    let mut stream = tokio::net::TcpStream::connect(gw).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut frame_header = [0u8; 9];
    stream.read_exact(&mut frame_header).await.unwrap();
    assert_eq!(frame_header[3], 0x4, "a SETTINGS frame");
}
