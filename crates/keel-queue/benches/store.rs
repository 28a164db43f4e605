//! The queue without HTTP: how many jobs per second the store adds in bulk and processes, by
//! direct store calls (fetch a batch, complete it, a few loops at once) and by an in-process
//! worker (`Queues::worker`) running a no-op handler. Run with
//! `cargo bench -p keel-queue --bench store -- [jobs] [concurrency]` (defaults 50000, 100).

use std::time::{Duration, Instant};

use keel_core::Clock;
use keel_queue::{Durability, NewJob, Outcome, QueueConfig, Queues, SqliteStore, Store};
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

fn open(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
    SqliteStore::open(&dir.path().join(name), Durability::Normal, Clock::system())
        .expect("the store opens")
}

async fn add_all(store: &impl Store, jobs: usize) {
    for chunk in 0..jobs.div_ceil(1000) {
        let n = 1000.min(jobs - chunk * 1000);
        let new = (0..n)
            .map(|i| NewJob::new("noop", json!({"user": chunk * 1000 + i, "kind": "welcome"})))
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
    let dir = tempfile::tempdir().expect("a temporary directory");

    let store = open(&dir, "direct.db");
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
    join_all(loops).await;
    println!("direct      {:>9.0} jobs/s", rate(jobs, started.elapsed()));

    let store = open(&dir, "worker.db");
    add_all(&store, jobs).await;
    let queues = Queues::new(store, QueueConfig::default());
    let started = Instant::now();
    let worker = queues
        .worker("bench")
        .concurrency(concurrency)
        .run(|_| async { Outcome::Done(serde_json::Value::Null) })
        .expect("the worker starts");
    // Completions are counted as they are committed (asking the store would add to its work).
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

/// Runs the futures concurrently on this task until all are done.
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
