//! Assembling keel from its config, and running it until shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keel_server::StartError> {
//! let config = keel_server::config::Config::default();
//! let app = keel_server::App::builder(config).build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(keel_server::StartError::Serve)?;
//! app.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use keel_admin::cache_service::CacheService;
use keel_admin::coordination_api::Coordination;
use keel_admin::router::RouterOptions;
use keel_admin::{AdminState, AdminStateBuilder};
use keel_auth::{AuthConfigError, Authenticator};
use keel_cache::Cache;
use keel_core::{Clock, HealthRegistry, Metrics, Shutdown};
use keel_queue::{QueueBackend, Queues, SqliteStore};
use keel_redis::{Limits, Locks, RedisStore, SharedLimits, TieredCache};
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

use crate::admin_token::{self, AdminToken, AdminTokenError};
use crate::checks;
use crate::config::Config;

/// Why keel cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created.
    #[error("server.data_dir: cannot create {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The generated admin token cannot be read or written.
    #[error(transparent)]
    AdminToken(#[from] AdminTokenError),
    /// The `[auth]` section is invalid (e.g. an unreadable key file).
    #[error("{}: {}", .0.field, .0.reason)]
    Auth(#[from] AuthConfigError),
    /// The job store in the data directory cannot be opened.
    #[error("queue store (server.data_dir/queue.db): {0}")]
    Queue(keel_queue::QueueError),
    /// The `[redis]` section cannot be used.
    #[error("redis.url: {0}")]
    Redis(keel_redis::RedisError),
    /// The `[gateway]` section cannot be used.
    #[error("{}: {}", .0.field, .0.reason)]
    Gateway(#[from] keel_gateway::GatewayConfigError),
    /// The gateway's listen address cannot be bound.
    #[error("gateway.listen: cannot listen on {addr}: {source}")]
    GatewayListen {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Binding or serving failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

/// The listeners keel serves on.
pub struct Listeners {
    /// The API, health, metrics and dashboard.
    pub api: TcpListener,
    /// The gateway, when `gateway.upstream` is set.
    pub gateway: Option<TcpListener>,
}

/// Builds an [`App`]; lets embedders and tests add API routes.
pub struct AppBuilder {
    config: Config,
    clock: Clock,
    api: Vec<OpenApiRouter>,
}

impl AppBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Serves `routes` under `/api/v1`, authenticated and in the OpenAPI document.
    pub fn api_routes(mut self, routes: OpenApiRouter) -> Self {
        self.api.push(routes);
        self
    }

    /// Creates the data directory and admin token, and assembles every subsystem. Call it
    /// within a Tokio runtime: with `[redis]` configured, the cache starts its invalidation
    /// listener here.
    pub fn build(self) -> Result<App, StartError> {
        let config = self.config;
        let data_dir = config.server.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let configured = !config.auth.tokens.is_empty() || config.auth.jwt.enabled();
        let admin_token = if configured {
            None
        } else {
            Some(admin_token::ensure(&data_dir)?)
        };
        let authenticator = Arc::new(Authenticator::new(
            &config.auth,
            admin_token.as_ref().map(|t| &t.token),
        )?);

        let shutdown = Shutdown::new();
        let state = AdminStateBuilder {
            health: HealthRegistry::new(config.health.check_timeout.get()),
            metrics: Metrics::new(&keel_core::BuildInfo::current()),
            authenticator: authenticator.clone(),
            public_health: config.auth.public_health,
            public_metrics: config.auth.public_metrics,
            sample_interval: config.system.sample_interval.get(),
            history_retention: config.system.history_retention.get(),
            shutdown,
            clock: self.clock.clone(),
            service_id: service_id(&config),
            data_dir: data_dir.clone(),
            effective_config: config.redacted_json(),
        }
        .build();
        let redis = config
            .redis
            .options()
            .map(|options| keel_redis::Redis::connect(&options, self.clock.clone()))
            .transpose()
            .map_err(StartError::Redis)?;
        checks::register_builtin(&state, &data_dir, &config.health, redis.as_ref());
        let shared_limits = redis.as_ref().map(|redis| {
            SharedLimits::new(
                redis.clone(),
                config.redis.rate_limit_on_outage,
                self.clock.clone(),
            )
        });
        if let (Some(redis), Some(shared)) = (&redis, &shared_limits) {
            keel_admin::coordination_api::observe_redis(&state, redis, shared);
        }
        let limits = match &shared_limits {
            Some(shared) => Limits::Shared(shared.clone()),
            None => Limits::Local(self.clock.clone()),
        };
        let locks = match &redis {
            Some(redis) => Locks::in_redis(redis.clone()),
            None => Locks::in_memory(self.clock.clone()),
        };
        let cache = Cache::with_clock(config.cache.clone(), self.clock.clone());
        // With Redis, the API's cache is two-tiered; the gateway keeps its responses in this
        // instance's memory tier and tells the other instances about its purges.
        let tiered = redis
            .as_ref()
            .map(|redis| TieredCache::start(cache.clone(), redis.clone(), self.clock.clone()));
        let cache_service = match &tiered {
            Some(tiered) => CacheService::Tiered(tiered.clone()),
            None => CacheService::Memory(cache.clone()),
        };
        keel_admin::cache_api::observe(&state, &cache_service);
        let queues = match (&config.queue.backend, &redis) {
            (QueueBackend::Redis, Some(redis)) => Queues::with_clock(
                RedisStore::new(redis.clone(), self.clock.clone()),
                config.queue.clone(),
                self.clock.clone(),
            ),
            // Config validation refuses `redis` without a Redis.
            _ => {
                let store = SqliteStore::open(
                    &data_dir.join("queue.db"),
                    config.queue.durability.into(),
                    self.clock.clone(),
                )
                .map_err(StartError::Queue)?;
                Queues::with_clock(store, config.queue.clone(), self.clock.clone())
            }
        };
        keel_admin::queue_api::observe(
            &state,
            &queues,
            config.queue.backend == QueueBackend::Redis,
        );
        let gateway = match config.gateway.upstream {
            Some(_) => Some(keel_gateway::Gateway::with_sharing(
                &config.gateway,
                cache.clone(),
                self.clock.clone(),
                Some(authenticator),
                keel_gateway::Sharing {
                    limits: limits.clone(),
                    purges: tiered.as_ref().map(TieredCache::broadcaster),
                },
            )?),
            None => None,
        };
        if let Some(gateway) = &gateway {
            keel_admin::gateway_api::observe(&state, gateway);
        }
        let mut api = vec![
            keel_admin::cache_api::routes(cache_service.clone()),
            keel_admin::queue_api::routes(queues.clone()),
            keel_admin::gateway_api::routes(gateway.clone()),
            keel_admin::coordination_api::routes(Coordination::new(locks, limits)),
        ];
        api.extend(self.api);
        let router = keel_admin::router(
            state.clone(),
            RouterOptions {
                body_limit: usize::try_from(config.server.body_limit.bytes()).unwrap_or(usize::MAX),
                api,
                cache_fast_path: Some(keel_admin::fast_path::CacheReadFastPath::new(
                    state.clone(),
                    cache_service,
                )),
            },
        );
        Ok(App {
            config,
            state,
            router,
            admin_token,
            cache,
            queues,
            gateway,
        })
    }
}

fn service_id(config: &Config) -> String {
    config
        .server
        .service_id
        .clone()
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "keel".to_owned())
}

/// An assembled keel, ready to serve.
pub struct App {
    config: Config,
    state: AdminState,
    router: Router,
    admin_token: Option<AdminToken>,
    cache: Cache,
    queues: Queues,
    gateway: Option<keel_gateway::Gateway>,
}

impl App {
    /// Starts building an app from `config`.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            clock: Clock::system(),
            api: Vec::new(),
        }
    }

    /// The effective config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The admin state (health registry, metrics, shutdown flag…).
    pub fn state(&self) -> &AdminState {
        &self.state
    }

    /// The job queues behind `/api/v1/queues`.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The cache engine behind `/api/v1/cache`.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The generated admin token, when no credential is configured.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    /// The gateway, when `gateway.upstream` is set.
    pub fn gateway(&self) -> Option<&keel_gateway::Gateway> {
        self.gateway.as_ref()
    }

    /// Binds the gateway's listener (`gateway.listen`), when there is a gateway.
    pub async fn bind_gateway(&self) -> Result<Option<TcpListener>, StartError> {
        if self.gateway.is_none() {
            return Ok(None);
        }
        let addr = self.config.gateway.listen;
        TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| StartError::GatewayListen { addr, source })
    }

    /// Serves the API on `listener` (and the gateway on `gateway.listen`, when configured)
    /// until `shutdown` resolves; see [`App::run_on`].
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let gateway = self.bind_gateway().await?;
        self.run_on(
            Listeners {
                api: listener,
                gateway,
            },
            shutdown,
        )
        .await
    }

    /// Serves on `listeners` until `shutdown` resolves, then stops gracefully: readiness turns
    /// 503 at once, new requests are still accepted for `server.shutdown_delay`, then the
    /// listeners close and in-flight requests get `server.shutdown_grace` to finish.
    pub async fn run_on(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let listener = listeners.api;
        // Declared queues' limits are in force before the first request.
        self.queues
            .declare(&self.config.queues)
            .await
            .map_err(StartError::Queue)?;
        let deliveries = self
            .queues
            .start_deliveries(self.state.clock())
            .map_err(StartError::Queue)?;
        let state = self.state.clone();
        let sampler = keel_admin::history::spawn_sampler(state.clone());
        let queue_maintenance = self.queues.spawn_maintenance();
        let delay = self.config.server.shutdown_delay.get();
        let grace = self.config.server.shutdown_grace.get();
        let flag = state.shutdown().clone();
        let stop_accepting = async move {
            tokio::select! {
                () = shutdown => flag.trigger(),
                () = flag.wait() => {}
            }
            tracing::info!(delay = ?delay, "shutting down: /ready now answers 503");
            tokio::time::sleep(delay).await;
            tracing::info!(grace = ?grace, "no longer accepting connections; draining in-flight requests");
        };
        let gateway = match (self.gateway, listeners.gateway) {
            (Some(gateway), Some(listener)) => {
                let flag = state.shutdown().clone();
                let stop = async move {
                    flag.wait().await;
                    tokio::time::sleep(delay).await;
                };
                Some(tokio::spawn(gateway.serve(listener, stop)))
            }
            _ => None,
        };
        let make_service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(listener, make_service)
            .with_graceful_shutdown(stop_accepting)
            .into_future();
        let deadline = async {
            state.shutdown().wait().await;
            tokio::time::sleep(delay + grace).await;
        };
        let result = tokio::select! {
            result = serve => result.map_err(StartError::Serve),
            () = deadline => {
                tracing::warn!("shutdown grace period over; closing remaining connections");
                Ok(())
            }
        };
        if let Some(gateway) = gateway {
            // Requests in flight through the gateway get what is left of the grace period.
            if tokio::time::timeout(grace, gateway).await.is_err() {
                tracing::warn!("gateway connections still open at the end of the grace period");
            }
        }
        // Deliveries in flight finish (within the grace period); the rest stay in the queue.
        let stop_deliveries = async {
            for worker in deliveries {
                worker.shutdown().await;
            }
        };
        if tokio::time::timeout(grace, stop_deliveries).await.is_err() {
            tracing::warn!("webhook deliveries still running at the end of the grace period");
        }
        sampler.abort();
        queue_maintenance.abort();
        tracing::info!("stopped");
        result
    }
}
