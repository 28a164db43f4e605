//! Test support: [`TestServer`] runs the real keel [`App`] on `127.0.0.1:0` with a temporary
//! data directory and one API token per role, and hands out HTTP clients for it;
//! [`RedisServer`] runs a private `redis-server` on a free port, [`RedisCluster`] a private
//! Redis Cluster.

mod cluster;
mod redis;

pub use cluster::RedisCluster;
pub use redis::{RedisSentinel, RedisServer, RedisTls};

use std::net::SocketAddr;
use std::path::Path;

use keel_admin::AdminState;
use keel_auth::{Role, TokenConfig};
use keel_core::Secret;
use keel_server::App;
use keel_server::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;

/// The admin token every [`TestServer`] accepts.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The worker token every [`TestServer`] accepts.
pub const WORKER_TOKEN: &str = "test-worker-token-0123456789";
/// The viewer token every [`TestServer`] accepts.
pub const VIEWER_TOKEN: &str = "test-viewer-token-0123456789";

/// Sends a request and fails the test if it cannot be sent.
pub trait Sent {
    /// Sends the request; panics when the server cannot be reached.
    fn sent(self) -> impl std::future::Future<Output = reqwest::Response> + Send;
}

impl Sent for reqwest::RequestBuilder {
    async fn sent(self) -> reqwest::Response {
        self.send().await.expect("request sent")
    }
}

/// Asserts a problem+json response and returns its status and body.
pub async fn problem(response: reqwest::Response) -> (reqwest::StatusCode, serde_json::Value) {
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "a {status} response must be problem+json"
    );
    (status, response.json().await.expect("a JSON problem body"))
}

/// PEM key pairs for signing test JWTs.
pub mod keys {
    /// RSA private key (PKCS#8).
    pub const RSA_PRIVATE: &str = include_str!("../keys/rsa-private.pem");
    /// RSA public key.
    pub const RSA_PUBLIC: &str = include_str!("../keys/rsa-public.pem");
    /// EC P-256 private key (PKCS#8).
    pub const EC_PRIVATE: &str = include_str!("../keys/ec-private.pem");
    /// EC P-256 public key.
    pub const EC_PUBLIC: &str = include_str!("../keys/ec-public.pem");
}

/// Serves `app` on a free loopback port for the rest of the test (an upstream app for the
/// gateway, a webhook receiver); returns its `http://127.0.0.1:<port>` URL.
pub async fn serve_app(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("app serves") });
    url
}

/// A keel server running in this process on a free loopback port.
pub struct TestServer {
    addr: SocketAddr,
    gateway_addr: Option<SocketAddr>,
    app_state: AdminState,
    data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), keel_server::StartError>>>,
    client: reqwest::Client,
}

/// A test config: listen on port 0, a fresh data dir, one token per role.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.data_dir = data_dir.to_owned();
    config.auth.tokens = [
        ("admin", ADMIN_TOKEN, Role::Admin),
        ("worker", WORKER_TOKEN, Role::Worker),
        ("viewer", VIEWER_TOKEN, Role::Viewer),
    ]
    .into_iter()
    .map(|(name, token, role)| TokenConfig {
        name: name.into(),
        token: Secret::new(token),
        role,
    })
    .collect();
    config
}

impl TestServer {
    /// Starts a server with [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}, Vec::new()).await
    }

    /// Starts a server with [`test_config`] changed by `configure`, serving `api` routes too.
    pub async fn start_with(configure: impl FnOnce(&mut Config), api: Vec<OpenApiRouter>) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(data_dir.path());
        configure(&mut config);
        let mut builder = App::builder(config);
        for routes in api {
            builder = builder.api_routes(routes);
        }
        let app = builder.build().expect("test app builds");
        let app_state = app.state().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        // The gateway, when configured, on a free port of its own.
        let gateway = match app.gateway() {
            Some(_) => Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind gateway"),
            ),
            None => None,
        };
        let gateway_addr = gateway
            .as_ref()
            .map(|l| l.local_addr().expect("local addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = keel_server::Listeners {
            api: listener,
            gateway,
        };
        let task = tokio::spawn(app.run_on(listeners, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            gateway_addr,
            app_state,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("client"),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<gateway port><path>`; panics without a gateway configured.
    pub fn gateway_url(&self, path: &str) -> String {
        let addr = self.gateway_addr.expect("the gateway is configured");
        format!("http://{addr}{path}")
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The server's admin state (health registry, metrics, shutdown flag).
    pub fn state(&self) -> &AdminState {
        &self.app_state
    }

    /// A plain HTTP client (no credentials).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request with the given role's token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        role: Role,
    ) -> reqwest::RequestBuilder {
        let token = match role {
            Role::Admin => ADMIN_TOKEN,
            Role::Worker => WORKER_TOKEN,
            Role::Viewer => VIEWER_TOKEN,
        };
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    /// `POST path` with `body` as JSON and the given role's token, sent.
    pub async fn post_as(
        &self,
        role: Role,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.request(reqwest::Method::POST, path, role)
            .json(body)
            .sent()
            .await
    }

    /// `GET path` without credentials, sent.
    pub async fn public(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).sent().await
    }

    /// `GET path` with `token` as bearer credential, sent.
    pub async fn get_bearer(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path` as admin.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, path, Role::Admin)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits until the server has stopped.
    pub async fn stop(mut self) -> Result<(), keel_server::StartError> {
        self.begin_shutdown();
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
