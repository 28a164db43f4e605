//! What Redis costs keel, one measurement per process so runs do not disturb each other:
//! `cargo bench -p keel-redis --bench redis_tier -- <mode> <redis-url> [ops]`, modes:
//!
//! - `memory-hit`: `Cache::get` of keys in memory (the baseline for `l1-hit`), ns/op;
//! - `l1-hit`: `TieredCache::get` of the same keys held in its memory tier, ns/op;
//! - `l2-hit`: `TieredCache::get` of keys only in Redis (each read once, so each goes to
//!   Redis and fills memory), one at a time: µs per read, p50 and p99;
//! - `raw-get`: a plain `GET` of a value of the same size through the same client crate and
//!   connection type, one at a time: µs per read, p50 and p99;
//! - `limit-decisions`: shared rate limit checks that Redis decides (64 in flight, keys never
//!   over their limit): decisions per second;
//! - `limit-flood`: one key flooded far past its limit (64 in flight): checks per second and
//!   the share answered by the local fast path.
//!
//! `bench/redis.sh` starts a Redis, runs each mode in alternating rounds and prints medians.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, SetOptions};
use keel_core::{Clock, Secret};
use keel_redis::{FailureMode, Redis, RedisOptions, SharedLimits, TieredCache};
use keel_resilience::Quota;

const VALUE: usize = 100;
const KEYS: usize = 10_000;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let url = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let ops: usize = args
        .get(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&mode, &url, ops));
}

fn redis(url: &str) -> Redis {
    let mut options = RedisOptions::new(Secret::new(url));
    options.key_prefix = "bench:".into();
    options.pool_size = 1;
    options.command_timeout = Duration::from_secs(5);
    Redis::connect(&options, Clock::system()).expect("redis handle")
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user:{i:06}:profile")).collect()
}

async fn run(mode: &str, url: &str, ops: usize) {
    let value = Bytes::from(vec![b'x'; VALUE]);
    let keys = keys();
    match mode {
        "memory-hit" => {
            let cache = Cache::new(CacheConfig::default());
            for k in &keys {
                cache.set(k, value.clone(), SetOptions::default()).unwrap();
            }
            let started = Instant::now();
            for i in 0..ops {
                std::hint::black_box(cache.get(&keys[(i * 7) % KEYS]));
            }
            println!("{mode}: {:.1} ns/op", per_op_ns(started, ops));
        }
        "l1-hit" => {
            let tiered = TieredCache::start(
                Cache::new(CacheConfig::default()),
                redis(url),
                Clock::system(),
            );
            wait_subscribed(&tiered).await;
            for k in &keys {
                tiered
                    .set(k, value.clone(), SetOptions::default())
                    .await
                    .unwrap();
            }
            let started = Instant::now();
            for i in 0..ops {
                std::hint::black_box(tiered.get(&keys[(i * 7) % KEYS]).await);
            }
            println!("{mode}: {:.1} ns/op", per_op_ns(started, ops));
        }
        "l2-hit" => {
            let writer = TieredCache::start(
                Cache::new(CacheConfig::default()),
                redis(url),
                Clock::system(),
            );
            for k in &keys {
                writer
                    .set(k, value.clone(), SetOptions::default())
                    .await
                    .unwrap();
            }
            let reader = TieredCache::start(
                Cache::new(CacheConfig::default()),
                redis(url),
                Clock::system(),
            );
            wait_subscribed(&reader).await;
            let n = ops.min(KEYS);
            let mut took = Vec::with_capacity(n);
            for k in keys.iter().take(n) {
                let started = Instant::now();
                assert!(reader.get(k).await.is_some(), "{k} is in Redis");
                took.push(started.elapsed());
            }
            assert_eq!(
                reader.stats().l2.hits as usize,
                n,
                "every read went to Redis"
            );
            report_latency(mode, &mut took);
        }
        "raw-get" => {
            let client = redis::Client::open(url).expect("url");
            let mut conn = client.get_connection_manager().await.expect("connection");
            for k in &keys {
                let _: () = redis::cmd("SET")
                    .arg(format!("bench:raw:{k}"))
                    .arg(value.as_ref())
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            let n = ops.min(KEYS);
            let mut took = Vec::with_capacity(n);
            for k in keys.iter().take(n) {
                let started = Instant::now();
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(format!("bench:raw:{k}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                took.push(started.elapsed());
                assert_eq!(v.len(), VALUE);
            }
            report_latency(mode, &mut took);
        }
        "limit-decisions" | "limit-flood" => {
            let limits = SharedLimits::new(redis(url), FailureMode::Closed, Clock::system());
            let flood = mode == "limit-flood";
            let quota = if flood {
                Quota {
                    max: 100,
                    per: Duration::from_secs(1),
                    burst: 100,
                }
            } else {
                Quota {
                    max: u32::MAX / 2,
                    per: Duration::from_secs(1),
                    burst: u32::MAX / 2,
                }
            };
            let limiter = Arc::new(limits.limiter(&format!("bench-{}", std::process::id()), quota));
            let started = Instant::now();
            let tasks: Vec<_> = (0..64)
                .map(|t| {
                    let limiter = limiter.clone();
                    tokio::spawn(async move {
                        for i in 0..ops / 64 {
                            let key = if flood {
                                "flooder".to_owned()
                            } else {
                                format!("k{}", (i * 64 + t) % 100_000)
                            };
                            std::hint::black_box(limiter.check(&key, 1).await);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let elapsed = started.elapsed().as_secs_f64();
            let s = limits.stats();
            let checks = (ops / 64 * 64) as f64;
            assert_eq!(s.fail_closed, 0, "Redis answered every check");
            println!(
                "{mode}: {:.0} checks/s, {:.0} Redis decisions/s, local share {:.3}",
                checks / elapsed,
                s.decisions as f64 / elapsed,
                s.local_refusals as f64 / checks
            );
        }
        other => panic!("unknown mode {other:?}"),
    }
}

async fn wait_subscribed(cache: &TieredCache) {
    for _ in 0..500 {
        if cache.stats().invalidation.subscribed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no subscription");
}

fn per_op_ns(started: Instant, ops: usize) -> f64 {
    started.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

fn report_latency(mode: &str, took: &mut [Duration]) {
    took.sort();
    let at =
        |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1e6;
    println!("{mode}: p50 {:.1} µs, p99 {:.1} µs", at(0.5), at(0.99));
}
