//! The connection every Redis-backed part of keel shares.
//!
//! [`Redis`] holds `pool_size` multiplexed connections (each pipelines any number of concurrent
//! commands) and hands them out in turn. A connection that breaks reconnects by itself with
//! exponential backoff; keel is never restarted for it. Every operation is bounded by
//! `command_timeout`, and a circuit breaker stops calling Redis after `breaker_failures`
//! outages in a row (timeouts, refused or dropped connections), so a dead or stalled Redis
//! costs callers nothing but an immediate [`RedisError::Unavailable`] until a trial command
//! succeeds again. Server replies that are errors (a script error, a wrong type) do not count
//! against the breaker: Redis answered.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keel_core::{Clock, Secret};
use keel_resilience::{BreakerConfig, BreakerState, CircuitBreaker};
use prometheus::{Histogram, HistogramOpts};
use redis::aio::ConnectionManagerConfig;
use serde::Serialize;

use crate::cluster;
use crate::error::RedisError;
use crate::pipe::Pipeline;
use crate::pool::{Conn, Opener, Pool, SentinelOptions};

/// How to reach Redis and how patient to be with it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host[:port][/db]` or `unix://…`.
    pub url: Secret,
    /// Prepended to every key keel writes, so several deployments can share one Redis.
    pub key_prefix: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one operation may take, reconnecting included, before it fails.
    pub command_timeout: Duration,
    /// Multiplexed connections to hand out in turn (at least 1).
    pub pool_size: usize,
    /// The first reconnect delay; it doubles (with jitter) up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// The longest reconnect delay.
    pub reconnect_max: Duration,
    /// Outages in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses operations before one trial goes through.
    pub breaker_cool_down: Duration,
    /// With `rediss://`: certificates in PEM files.
    pub tls: TlsFiles,
    /// Follow the master these Sentinels name (the URL's host and port are then replaced by
    /// the master's).
    pub sentinel: Option<SentinelOptions>,
    /// `host:port` of some nodes of a Redis Cluster to use (the URL's host and port are then
    /// replaced by each node's); empty for one Redis.
    pub cluster: Vec<String>,
}

/// PEM files for `rediss://` connections.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA certificates that sign Redis's certificate, instead of the system's roots (for a
    /// private CA).
    pub ca_file: Option<PathBuf>,
    /// keel's client certificate, when Redis asks for one (mutual TLS); with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    fn certificates(&self) -> Result<redis::TlsCertificates, RedisError> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| RedisError::Tls(format!("cannot read {}: {e}", path.display())))
        };
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(RedisError::Tls(
                    "a client certificate needs both a certificate file and a key file".into(),
                ));
            }
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca_file.as_ref().map(read).transpose()?,
        })
    }
}

impl RedisOptions {
    /// Defaults for `url`: prefix `keel:`, 2 s to connect, 250 ms per command, 2 connections,
    /// reconnects from 50 ms up to 1 s apart, the breaker opening after 5 outages for 1 s.
    pub fn new(url: Secret) -> Self {
        Self {
            url,
            key_prefix: "keel:".to_owned(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(250),
            pool_size: 2,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_cool_down: Duration::from_secs(1),
            tls: TlsFiles::default(),
            sentinel: None,
            cluster: Vec::new(),
        }
    }
}

/// The longest a connection waits for any answer; operations have shorter timeouts of their own.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(60);

/// A handle on Redis. Cheap to clone; clones share the connections, breaker and statistics.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    connect_timeout: Duration,
    next: AtomicUsize,
    prefix: String,
    command_timeout: Duration,
    breaker: CircuitBreaker,
    counters: Counters,
    latency: Histogram,
    /// Whether the last operation was an outage: the next success counts as a reconnect.
    down: AtomicBool,
}

#[derive(Default)]
struct Counters {
    commands: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    refused: AtomicU64,
    reconnects: AtomicU64,
}

/// What the handle has seen since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RedisStats {
    /// Operations sent (scripts and pipelines count once).
    pub commands: u64,
    /// Operations that failed: outages and server errors (timeouts included).
    pub errors: u64,
    /// Operations that timed out.
    pub timeouts: u64,
    /// Operations not sent because the breaker was open.
    pub refused: u64,
    /// Times an operation succeeded after an outage: the connection came back.
    pub reconnects: u64,
    /// The breaker's state.
    pub breaker: BreakerState,
}

impl Redis {
    /// Opens the handle. Connects lazily: Redis may be down now and come up later, and nothing
    /// here waits for it. Fails only for a URL or TLS files that cannot be used.
    pub fn connect(options: &RedisOptions, clock: Clock) -> Result<Self, RedisError> {
        let url = options.url.expose();
        let tls = if url.starts_with("rediss://") {
            Some(options.tls.certificates()?)
        } else {
            None
        };
        // Each operation is bounded by its own timeout in `run` (the command timeout, or a
        // longer one the caller chose for large work); the connection's is only a backstop.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout.max(RESPONSE_BACKSTOP)))
            .set_min_delay(options.reconnect_min)
            .set_max_delay(options.reconnect_max)
            .set_number_of_retries(usize::MAX);
        let opener = Opener {
            url: url.to_owned(),
            tls,
            config,
            size: options.pool_size,
            connect_timeout: options.connect_timeout,
            response_timeout: options.command_timeout.max(RESPONSE_BACKSTOP),
        };
        let pool = Pool::new(opener, options.sentinel.clone(), &options.cluster)?;
        let breaker = CircuitBreaker::new(
            BreakerConfig {
                failure_threshold: options.breaker_failures.max(1),
                cool_down: options.breaker_cool_down,
                ..BreakerConfig::default()
            },
            clock,
        );
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "keel_redis_command_duration_seconds",
                "Time Redis operations took, failures included.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ]),
        )
        .expect("static histogram definition is valid");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                connect_timeout: options.connect_timeout,
                next: AtomicUsize::new(0),
                prefix: options.key_prefix.clone(),
                command_timeout: options.command_timeout,
                breaker,
                counters: Counters::default(),
                latency,
                down: AtomicBool::new(false),
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// `suffix` under the key prefix.
    pub fn key(&self, suffix: &str) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + suffix.len());
        key.push_str(&self.inner.prefix);
        key.push_str(suffix);
        key
    }

    /// Runs one command.
    pub async fn query<T: redis::FromRedisValue + Send>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        self.run(self.inner.command_timeout, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Runs a script (EVALSHA; the script is loaded again if Redis answers NOSCRIPT, as after
    /// a restart).
    pub async fn script<T: redis::FromRedisValue + Send>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.run(self.inner.command_timeout, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    /// Runs a pipeline (atomic if built with `.atomic()`). On a Cluster, a pipeline over
    /// several slots is sent as one pipeline per slot, concurrently (a transaction must stay
    /// within one slot).
    pub async fn pipeline<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.pipeline_within(pipe, self.inner.command_timeout).await
    }

    /// Runs a pipeline that may take up to `timeout` instead of the command timeout (work
    /// whose size the caller knows, such as adding thousands of jobs in one script).
    pub async fn pipeline_within<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, RedisError> {
        self.pipeline_loading(pipe, timeout, &[]).await
    }

    /// Runs a pipeline (of script calls, say) within `timeout`. Where Redis does not know
    /// a script (NOSCRIPT: it restarted, or its scripts were flushed), `loads` — `SCRIPT LOAD`
    /// commands — are run there all at once (MULTI, so no concurrent caller finds some loaded
    /// and others not) and what failed is sent again: the whole pipeline on one Redis, the
    /// failed slot's part on a Cluster.
    pub async fn pipeline_loading<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &Pipeline,
        timeout: Duration,
        loads: &[redis::Cmd],
    ) -> Result<T, RedisError> {
        self.run(timeout, |conn| async move {
            match conn {
                Conn::Single(mut conn) => {
                    let pipe = pipe.as_redis();
                    match pipe.query_async(&mut conn).await {
                        Err(e) if cluster::is_noscript(&e) && !loads.is_empty() => {
                            let mut load = redis::pipe();
                            load.atomic();
                            for cmd in loads {
                                load.add_command(cmd.clone()).ignore();
                            }
                            let () = load.query_async(&mut conn).await?;
                            pipe.query_async(&mut conn).await
                        }
                        other => other,
                    }
                }
                Conn::Cluster(conn) => {
                    let value = cluster::run_split(&conn, pipe, loads).await?;
                    Ok(redis::from_redis_value(value)?)
                }
            }
        })
        .await
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.pool.cluster().is_some()
    }

    /// The longest an operation may take (`redis.command_timeout`).
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// Opens a connection of its own subscribed to `channel` (subscriptions cannot share the
    /// multiplexed connections). Fails when Redis cannot be reached within the connect timeout.
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, RedisError> {
        let inner = &*self.inner;
        if let Some(cluster) = inner.pool.cluster() {
            let connect = cluster::subscribe(cluster, channel);
            return match tokio::time::timeout(inner.connect_timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(RedisError::Timeout(inner.connect_timeout)),
            };
        }
        let connect = async {
            let connections = inner.pool.get().await?;
            let subscribed = async {
                let mut pubsub = connections.client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let result = subscribed.await.map_err(RedisError::from);
            if result.is_err() {
                inner.pool.forget(&connections);
            }
            result
        };
        match tokio::time::timeout(inner.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::Timeout(inner.connect_timeout)),
        }
    }

    /// One `SCAN` step over keys matching `pattern` (Redis glob), about `count` keys examined:
    /// the next cursor (0 when done) and the keys found. On a Cluster the steps go through
    /// every master in turn (the cursor says which).
    pub async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), RedisError> {
        self.run(self.inner.command_timeout, |conn| async move {
            match conn {
                Conn::Cluster(conn) => cluster::scan(&conn, cursor, pattern, count).await,
                Conn::Single(mut conn) => {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(count)
                        .query_async(&mut conn)
                        .await
                }
            }
        })
        .await
    }

    /// PINGs Redis, returning how long the answer took.
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(started.elapsed())
    }

    /// Runs `op` on the next connection, within the command timeout and the breaker, counting
    /// it.
    async fn run<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let inner = &*self.inner;
        let c = &inner.counters;
        // A caller that gives up mid-operation (its request was dropped) drops the permit,
        // which fails a half-open trial rather than leave the breaker waiting for its report.
        let permit = match CircuitBreaker::call(&inner.breaker) {
            Ok(permit) => permit,
            Err(wait) => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                return Err(RedisError::Unavailable(wait));
            }
        };
        c.commands.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let mut used = None;
        let attempt = async {
            let conn = match inner.pool.cluster() {
                // One connection object: it multiplexes over a connection per node itself.
                Some(cluster) => Conn::Cluster(cluster.connection.clone()),
                None => {
                    let connections = inner.pool.get().await?;
                    let index =
                        inner.next.fetch_add(1, Ordering::Relaxed) % connections.managers.len();
                    let conn = connections.managers[index].clone();
                    used = Some(connections);
                    Conn::Single(conn)
                }
            };
            op(conn).await.map_err(RedisError::from)
        };
        let outcome = tokio::time::timeout(timeout, attempt).await;
        let took = started.elapsed();
        inner.latency.observe(took.as_secs_f64());
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(RedisError::Timeout(_))) | Err(_) => Err(RedisError::Timeout(timeout)),
            Ok(Err(e)) => Err(e),
        };
        // A demoted master counts as an outage when following Sentinels (they name another).
        let outage = result
            .as_ref()
            .err()
            .is_some_and(|e| e.is_outage() || (e.is_readonly() && inner.pool.follows_sentinels()));
        if outage && let Some(used) = &used {
            inner.pool.forget(used);
        }
        if result.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        let moved = permit.finish(outage, took);
        if outage {
            if matches!(result, Err(RedisError::Timeout(_))) {
                c.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            if moved == Some(BreakerState::Open)
                && let Err(e) = &result
            {
                tracing::warn!(error = %e, "Redis keeps failing; not calling it for a while");
            }
            inner.down.store(true, Ordering::Relaxed);
        } else {
            // Redis answered (perhaps with an error reply): the way to it works.
            if inner.down.swap(false, Ordering::Relaxed) {
                c.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("Redis answers again");
            }
        }
        result
    }

    /// What the handle has seen.
    pub fn stats(&self) -> RedisStats {
        let c = &self.inner.counters;
        RedisStats {
            commands: c.commands.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            breaker: self.inner.breaker.state(),
        }
    }

    /// The command latency histogram, for the metrics registry.
    pub(crate) fn latency(&self) -> Histogram {
        self.inner.latency.clone()
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("Redis")
            .field("prefix", &self.inner.prefix)
            .field("sentinels", &self.inner.pool.follows_sentinels())
            .field("cluster", &self.is_cluster())
            .finish()
    }
}
