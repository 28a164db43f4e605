//! The built-in health checks.
//!
//! | key | type | verdict |
//! |---|---|---|
//! | `datadir:writable` | datastore | fail when a file cannot be written there (affects readiness) |
//! | `datadir:free` | system | warn below `health.disk_min_free` |
//! | `memory:utilization` | system | warn at or above `health.memory_warn_percent` |
//! | `process:memory` | system | pass; observes RSS |
//! | `uptime:uptime` | system | pass; observes seconds since start |
//! | `redis:connection` | datastore | warn (not fail: keel falls back to memory) when unreachable |

use std::path::{Path, PathBuf};
use std::time::Instant;

use keel_admin::AdminState;
use keel_core::CheckOutcome;
use keel_core::health::CheckSpec;
use keel_redis::{Redis, RedisError};

use crate::config::HealthConfig;

/// Registers every built-in check with the state's health registry.
pub fn register_builtin(
    state: &AdminState,
    data_dir: &Path,
    health: &HealthConfig,
    redis: Option<&Redis>,
) {
    let registry = state.health();

    let dir = data_dir.to_owned();
    registry.register(
        CheckSpec::new("datadir", "writable", "datastore").required(),
        move || {
            let dir = dir.clone();
            async move { blocking(move || write_probe(&dir)).await }
        },
    );

    let dir = data_dir.to_owned();
    let min_free = health.disk_min_free.bytes();
    registry.register(CheckSpec::new("datadir", "free", "system"), move || {
        let dir = dir.clone();
        async move { blocking(move || free_space(&dir, min_free)).await }
    });

    let sampler_state = state.clone();
    let warn_at = health.memory_warn_percent;
    registry.register(
        CheckSpec::new("memory", "utilization", "system"),
        move || {
            let state = sampler_state.clone();
            async move {
                blocking(move || {
                    let percent =
                        (state.sampler().sample().memory_used_percent * 10.0).round() / 10.0;
                    let outcome = if percent >= warn_at {
                        CheckOutcome::warn(format!(
                            "system memory {percent}% used (warns at {warn_at}%)"
                        ))
                    } else {
                        CheckOutcome::pass()
                    };
                    outcome.observed(percent, "percent")
                })
                .await
            }
        },
    );

    let process_state = state.clone();
    registry.register(CheckSpec::new("process", "memory", "system"), move || {
        let state = process_state.clone();
        async move {
            blocking(move || {
                CheckOutcome::pass().observed(state.sampler().sample().process_rss_bytes, "bytes")
            })
            .await
        }
    });

    let started = Instant::now();
    registry.register(
        CheckSpec::new("uptime", "uptime", "system"),
        move || async move { CheckOutcome::pass().observed(started.elapsed().as_secs(), "s") },
    );

    if let Some(redis) = redis {
        let redis = redis.clone();
        registry.register(
            CheckSpec::new("redis", "connection", "datastore"),
            move || {
                let redis = redis.clone();
                async move { redis_check(&redis).await }
            },
        );
    }
}

async fn blocking(f: impl FnOnce() -> CheckOutcome + Send + 'static) -> CheckOutcome {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| CheckOutcome::fail(format!("check failed: {e}")))
}

fn write_probe(dir: &Path) -> CheckOutcome {
    let probe: PathBuf = dir.join(".keel-write-probe");
    match std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => CheckOutcome::pass(),
        Err(e) => CheckOutcome::fail(format!("cannot write to {}: {e}", dir.display())),
    }
}

fn free_space(dir: &Path, min_free: u64) -> CheckOutcome {
    let Ok(dir) = dir.canonicalize() else {
        return CheckOutcome::fail(format!("{} does not exist", dir.display()));
    };
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
        return CheckOutcome::warn("cannot list disks on this platform");
    };
    let disk = disks
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    match disk {
        None => CheckOutcome::warn(format!("no disk found for {}", dir.display())),
        Some(d) => {
            let free = d.available_space();
            let outcome = if free < min_free {
                CheckOutcome::warn(format!(
                    "{free} bytes free, below health.disk_min_free ({min_free})"
                ))
            } else {
                CheckOutcome::pass()
            };
            outcome.observed(free, "bytes")
        }
    }
}

/// PINGs Redis through the shared connection: pass with the latency, warn (never fail: keel
/// keeps serving from memory) when Redis cannot be reached or its breaker is open.
async fn redis_check(redis: &Redis) -> CheckOutcome {
    match redis.ping().await {
        Ok(took) => {
            let ms = (took.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
            CheckOutcome::pass().observed(ms, "ms")
        }
        Err(RedisError::Unavailable(_)) => CheckOutcome::warn(
            "Redis keeps failing; keel is not calling it for now and serves from memory",
        ),
        Err(e) => CheckOutcome::warn(format!("{e}; serving from memory")),
    }
}
