//! keel's Redis layer: what several keel instances share, and the connection they share it
//! through.
//!
//! # Layout
//! - [`cache`]: [`TieredCache`], the memory cache in front of Redis, with invalidations
//!   broadcast to every instance.
//! - [`client`]: [`Redis`], a handle on a small set of multiplexed connections that reconnect
//!   on their own with backoff, time out every command, stop calling a Redis that keeps
//!   failing (a circuit breaker), and count commands, errors, timeouts and latency.
//! - [`limiter`]: [`SharedLimits`] and its [`SharedRateLimiter`]s, the GCRA limiter of `keel-resilience` with its state in
//!   Redis (one atomic script per decision) so every instance spends the same budget; keys
//!   already over their limit are refused locally without a round trip.
//! - [`limits`]: [`Limits`] and [`Limiter`], one type for budgets in this process or in Redis.
//! - [`lock`]: [`Locks`], named leases with fencing tokens, in Redis or (one instance) in memory.
//! - [`queue`]: [`RedisStore`], the job queue's store in Redis (Lua scripts per state change),
//!   so workers on every instance share the queues.
//! - `pool`: where the connections go — one Redis, the master a set of Sentinels names (asked
//!   again after a failover), or a Redis Cluster.
//! - [`pipe`]: [`Pipeline`], commands sent in one round trip, split by slot on a Cluster
//!   (`cluster` runs the parts, and `SCAN`s every master in turn).
//! - [`error`]: [`RedisError`], which never carries the URL or its password.
//!
//! Keys are `<prefix><kind>:…` (default prefix `keel:`). A key that a script touches together
//! with another carries a `{…}` hash tag, so both land in one Redis Cluster slot.

pub mod cache;
pub mod client;
mod cluster;
pub mod error;
pub mod limiter;
pub mod limits;
pub mod lock;
mod metrics;
pub mod pipe;
mod pool;
pub mod queue;

pub use cache::{Broadcaster, ClusterStats, Invalidation, TierStats, TieredCache};
pub use client::{Redis, RedisOptions, RedisStats, TlsFiles};
pub use error::RedisError;
pub use limiter::{FailureMode, SharedLimitStats, SharedLimits, SharedRateLimiter};
pub use limits::{Limiter, Limits};
pub use lock::{Lease, LockError, Locks};
pub use metrics::register_metrics;
pub use pipe::{Pipeline, pipe};
pub use pool::SentinelOptions;
pub use queue::RedisStore;
