//! The Redis job store without HTTP: how many jobs per second it adds in bulk and processes, by
//! direct store calls (fetch a batch, complete it, a few loops at once) and by an in-process
//! worker (`Queues::worker`) running a no-op handler — the numbers to set beside BullMQ's on
//! the same Redis. Run with `REDIS_PORT=… cargo bench -p keel-redis --bench queue_store --
//! [jobs] [concurrency]` (defaults 50000, 100); it flushes that Redis.

// The measurements are the SQLite store's bench's, so the two compare like for like.
#[path = "../../keel-queue/benches/throughput/mod.rs"]
mod throughput;

use std::time::Duration;

use keel_core::{Clock, Secret};
use keel_redis::{Redis, RedisOptions, RedisStore};
use throughput::{add_all, arg, process_direct, process_in_process};

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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (jobs, concurrency) = (arg(0, 50_000), arg(1, 100));
    let redis = redis();
    flush(&redis).await;
    let store = RedisStore::new(redis.clone(), Clock::system());
    println!("add         {:>9.0} jobs/s", add_all(&store, jobs).await);
    let rate = process_direct(&store, jobs, concurrency).await;
    println!("direct      {rate:>9.0} jobs/s");

    flush(&redis).await;
    add_all(&store, jobs).await;
    let rate = process_in_process(store, jobs, concurrency).await;
    println!("in-process  {rate:>9.0} jobs/s");
}
