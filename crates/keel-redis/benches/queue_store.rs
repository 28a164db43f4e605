//! The Redis job store without HTTP: how many jobs per second it adds in bulk and processes, by
//! direct store calls (fetch a batch, complete it, a few loops at once) and by an in-process
//! worker (`Queues::worker`) running a no-op handler — the numbers to set beside BullMQ's on
//! the same Redis. Run with `REDIS_PORT=… cargo bench -p keel-redis --bench queue_store --
//! [jobs] [concurrency]` (defaults 50000, 100); it flushes that Redis.

use std::time::{Duration, Instant};

use keel_core::{Clock, Secret};
use keel_queue::{NewJob, Outcome, QueueConfig, Queues, Store};
use keel_redis::{Redis, RedisOptions, RedisStore};
use serde_json::json;

/// Jobs per fetch of the direct store loops.
const BATCH: usize = 50;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn redis() -> Redis {
    let port = std::env::var("REDIS_PORT").unwrap_or_else(|_| "6379".into());
    let mut options = RedisOptions::new(Secret::new(format!("redis://127.0.0.1:{port}")));
    options.command_timeout = Duration::from_secs(10);
    Redis::connect(&options, Clock::system()).expect("a Redis URL")
}

async fn flush(redis: &Redis) {
    let _: String = redis
        .query(&redis::cmd("FLUSHALL"))
        .await
        .expect("FLUSHALL");
}

async fn add_all(store: &impl Store, jobs: usize) {
    for chunk in 0..jobs.div_ceil(1000) {
        let n = 1000.min(jobs - chunk * 1000);
        let new = (0..n)
            .map(|i| {
                NewJob::new(
                    "noop",
                    json!({"user": chunk * 1000 + i, "kind": "welcome", "locale": "en"}),
                )
            })
            .collect();
        store.add("bench", new).await.expect("add");
    }
}

fn rate(jobs: usize, took: Duration) -> f64 {
    jobs as f64 / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (jobs, concurrency) = (arg(0, 50_000), arg(1, 100));
    let redis = redis();
    flush(&redis).await;
    let store = RedisStore::new(redis.clone(), Clock::system());
    let started = Instant::now();
    add_all(&store, jobs).await;
    println!("add         {:>9.0} jobs/s", rate(jobs, started.elapsed()));
    let started = Instant::now();
    let loops = (0..concurrency.div_ceil(BATCH)).map(|w| {
        let store = &store;
        async move {
            let worker = format!("w{w}");
            loop {
                let fetched = store
                    .fetch("bench", &worker, BATCH, Duration::from_secs(60))
                    .await
                    .expect("fetch");
                if fetched.is_empty() {
                    break;
                }
                let done = fetched
                    .into_iter()
                    .map(|f| (f.job.id, f.token, json!(null)))
                    .collect();
                for outcome in store.complete_many(done).await.expect("complete") {
                    outcome.expect("complete");
                }
            }
        }
    });
    futures_util::future::join_all(loops).await;
    println!("direct      {:>9.0} jobs/s", rate(jobs, started.elapsed()));

    flush(&redis).await;
    add_all(&store, jobs).await;
    let queues = Queues::new(store, QueueConfig::default());
    let started = Instant::now();
    let worker = queues
        .worker("bench")
        .concurrency(concurrency)
        .run(|_| async { Outcome::Done(serde_json::Value::Null) })
        .expect("the worker starts");
    // Completions are counted as they are answered (asking the store would add to its work).
    loop {
        let done = queues.events().get("bench").map_or(0, |e| e.completed);
        if done as usize == jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("in-process  {:>9.0} jobs/s", rate(jobs, started.elapsed()));
    worker.shutdown().await;
}
