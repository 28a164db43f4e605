//! A real upstream app and a gateway in front of it, both on loopback ports.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::routing::{any, get, post};
use futures_util::StreamExt;
use keel_cache::{Cache, CacheConfig};
use keel_core::{Clock, MockClock};
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
/// `/download/{bytes}` (streams that many bytes), `/hang` (never answers), `/trickle` (sends
/// one piece, then nothing), `/held` (answers once `release` is notified), `/r/…` (scripted).
pub struct App {
    pub addr: SocketAddr,
    /// The scripted resource at `/r/...`.
    pub script: Arc<Mutex<Script>>,
    stop: tokio::sync::watch::Sender<bool>,
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
        let script = Arc::new(Mutex::new(Script::default()));
        let router = Router::new()
            .route("/r/{*rest}", any(scripted))
            .with_state(script.clone())
            .route("/echo", any(echo))
            .route("/echo/{*rest}", any(echo))
            .route("/upload", post(upload))
            .route("/download/{bytes}", get(download))
            .route("/hang", get(std::future::pending::<&'static str>))
            .route(
                "/trickle",
                get(|| async {
                    // One piece, then silence.
                    let first = futures_util::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from_static(b"first piece"))
                    });
                    Body::from_stream(first.chain(futures_util::stream::pending()))
                }),
            )
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
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(serve_until_stopped(listener, router, stopped));
        Self {
            addr,
            script,
            stop,
            arrived,
            release,
        }
    }

    /// Stops the app: the listener and every open connection close.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Requests the scripted resource has answered (304s included).
    pub fn hits(&self) -> usize {
        self.script.lock().unwrap().hits
    }

    /// Changes the scripted response.
    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What `/r/...` answers: `status`, `headers` and `body`; `304` when the request's
/// `If-None-Match` names `etag`. Counts every request and keeps the last one's headers.
#[derive(Default)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub etag: Option<String>,
    pub hits: usize,
    pub last_request: Vec<(String, String)>,
    /// When set, each request waits for this before answering.
    pub hold: Option<Arc<Notify>>,
}

async fn scripted(
    axum::extract::State(script): axum::extract::State<Arc<Mutex<Script>>>,
    request: Request,
) -> axum::response::Response {
    let hold = {
        let mut s = script.lock().unwrap();
        s.hits += 1;
        s.last_request = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        s.hold.clone()
    };
    if let Some(hold) = hold {
        hold.notified().await;
    }
    let s = script.lock().unwrap();
    let mut response = axum::response::Response::new(Body::from(s.body.clone()));
    *response.status_mut() =
        axum::http::StatusCode::from_u16(if s.status == 0 { 200 } else { s.status }).unwrap();
    for (k, v) in &s.headers {
        response.headers_mut().append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    if let Some(etag) = &s.etag {
        response
            .headers_mut()
            .insert("etag", axum::http::HeaderValue::from_str(etag).unwrap());
        let matches = request
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v.to_str().unwrap_or_default() == etag);
        if matches {
            *response.status_mut() = axum::http::StatusCode::NOT_MODIFIED;
            *response.body_mut() = Body::empty();
        }
    }
    response
}

/// Serves `router` until `stopped` turns true, then closes the listener and every connection.
async fn serve_until_stopped(
    listener: TcpListener,
    router: Router,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted.unwrap(),
            _ = stopped.wait_for(|s| *s) => return,
        };
        let router = router.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move { tower::ServiceExt::oneshot(router, request.map(Body::new)).await }
                },
            );
            let connection =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                    .into_owned();
            tokio::select! {
                _ = connection => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        });
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
    let (clock, _) = Clock::mock();
    start(upstream, configure, clock).await.addr
}

/// A running gateway with its handle, cache engine and mock clock.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    pub cache: Cache,
    pub clock: MockClock,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A gateway on a mock clock: freshness only changes when the test advances it.
pub async fn gateway_on_mock_clock(
    upstream: &str,
    configure: impl FnOnce(&mut GatewayConfig),
) -> Running {
    let (clock, mock) = Clock::mock();
    let mut running = start(upstream, configure, clock).await;
    running.clock = mock;
    running
}

async fn start(
    upstream: &str,
    configure: impl FnOnce(&mut GatewayConfig),
    clock: Clock,
) -> Running {
    let mut config = GatewayConfig::default();
    config.upstream = Some(upstream.to_owned());
    configure(&mut config);
    let cache = Cache::with_clock(CacheConfig::default(), clock.clone());
    let auth = keel_auth::Authenticator::new(&auth_config(), None).expect("test credentials");
    let gateway = Gateway::new(&config, cache.clone(), clock, Some(Arc::new(auth)))
        .expect("valid gateway config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.clone().serve(listener, std::future::pending()));
    Running {
        addr,
        gateway,
        cache,
        clock: Clock::mock().1,
    }
}

/// A client that keeps no connections (each test sees fresh ones) and asks for no encoding
/// unless a test sets `Accept-Encoding` itself (then it gets the bytes as sent).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .build()
        .unwrap()
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Two API tokens: `admin-token-0123456789` (admin) and `user-token-0123456789abc` (viewer,
/// named `alice`).
pub fn auth_config() -> keel_auth::AuthConfig {
    let mut config = keel_auth::AuthConfig::default();
    config.tokens = vec![
        keel_auth::TokenConfig {
            name: "ops".into(),
            token: keel_core::Secret::new("admin-token-0123456789"),
            role: keel_auth::Role::Admin,
        },
        keel_auth::TokenConfig {
            name: "alice".into(),
            token: keel_core::Secret::new("user-token-0123456789abc"),
            role: keel_auth::Role::Viewer,
        },
    ];
    config
}
