//! A real upstream app and a gateway in front of it, both on loopback ports.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::routing::{any, get, post};
use futures_util::StreamExt;
use keel_gateway::{Gateway, GatewayConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What `/echo` saw.
pub fn echo_json(
    method: &str,
    uri: &str,
    headers: BTreeMap<String, String>,
    body: usize,
) -> serde_json::Value {
    serde_json::json!({ "method": method, "uri": uri, "headers": headers, "body_bytes": body })
}

/// The upstream app: `/echo` (reports the request), `/upload` (counts a streamed body),
/// `/download/{bytes}` (streams that many bytes), `/hang` (never answers), `/held` (answers
/// once `release` is notified).
pub struct App {
    pub addr: SocketAddr,
    /// Notified when a `/held` request has reached the app.
    pub arrived: Arc<Notify>,
    /// Lets one `/held` request finish.
    pub release: Arc<Notify>,
}

impl App {
    pub async fn start() -> Self {
        let release = Arc::new(Notify::new());
        let arrived = Arc::new(Notify::new());
        let (held, arriving) = (release.clone(), arrived.clone());
        let router = Router::new()
            .route("/echo", any(echo))
            .route("/echo/{*rest}", any(echo))
            .route("/upload", post(upload))
            .route("/download/{bytes}", get(download))
            .route("/hang", get(std::future::pending::<&'static str>))
            .route(
                "/held",
                get(move || {
                    let (held, arriving) = (held.clone(), arriving.clone());
                    async move {
                        arriving.notify_one();
                        held.notified().await;
                        "released"
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            addr,
            arrived,
            release,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn echo(request: Request) -> axum::Json<serde_json::Value> {
    let (parts, body) = request.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    axum::Json(echo_json(
        parts.method.as_str(),
        &parts.uri.to_string(),
        headers,
        body.len(),
    ))
}

async fn upload(body: Body) -> String {
    let mut stream = body.into_data_stream();
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.unwrap().len();
    }
    bytes.to_string()
}

async fn download(Path(bytes): Path<usize>) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'k'; CHUNK]);
    let chunks = bytes.div_ceil(CHUNK);
    let stream = futures_util::stream::iter(0..chunks).map(move |i| {
        let len = CHUNK.min(bytes - i * CHUNK);
        Ok::<_, std::io::Error>(chunk.slice(..len))
    });
    Body::from_stream(stream)
}

/// A gateway in front of `upstream`, with `configure` applied, on a free port.
pub async fn gateway(upstream: &str, configure: impl FnOnce(&mut GatewayConfig)) -> SocketAddr {
    let mut config = GatewayConfig::default();
    config.upstream = Some(upstream.to_owned());
    configure(&mut config);
    let gateway = Gateway::new(&config).expect("valid gateway config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    addr
}

/// A client that keeps no connections (each test sees fresh ones).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
