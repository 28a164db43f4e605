//! What the store benchmarks measure, for any [`Store`]: a bulk add, processing by direct store
//! calls (a few loops fetching a batch and completing it), and processing by the in-process
//! worker with a no-op handler. Shared by this crate's `store` bench (SQLite) and
//! `keel-redis`'s `queue_store` bench (Redis), which includes this file.

use std::time::{Duration, Instant};

use keel_queue::{NewJob, Outcome, QueueConfig, Queues, Store};
use serde_json::json;

/// Jobs per fetch of the direct store loops.
const BATCH: usize = 50;

/// The benchmark's `n`-th argument, or `default`.
pub(crate) fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Adds `jobs` no-op jobs to the queue `bench` in bulk adds of 1,000 (the payload the BullMQ
/// comparison uses). Returns jobs per second.
pub(crate) async fn add_all(store: &impl Store, jobs: usize) -> f64 {
    let started = Instant::now();
    for chunk in 0..jobs.div_ceil(1000) {
        let n = 1000.min(jobs - chunk * 1000);
        let new = (0..n)
            .map(|i| {
                let payload = json!({"user": chunk * 1000 + i, "kind": "welcome", "locale": "en"});
                NewJob::new("noop", payload)
            })
            .collect();
        store.add("bench", new).await.expect("add");
    }
    rate(jobs, started.elapsed())
}

/// Works every job of `bench` with `concurrency` jobs in flight by direct store calls: loops
/// that fetch a batch and complete it. Returns jobs per second.
pub(crate) async fn process_direct(store: &impl Store, jobs: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let loops = (0..concurrency.div_ceil(BATCH)).map(|w| async move {
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
                .map(|f| (f.job.id, f.token, serde_json::Value::Null))
                .collect();
            for outcome in store.complete_many(done).await.expect("complete") {
                outcome.expect("complete");
            }
        }
    });
    join_all(loops).await;
    rate(jobs, started.elapsed())
}

/// Works the `jobs` waiting in `store`'s queue `bench` with the in-process worker
/// (`concurrency` slots, a no-op handler). Returns jobs per second.
pub(crate) async fn process_in_process(
    store: impl Store + 'static,
    jobs: usize,
    concurrency: usize,
) -> f64 {
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
    let rate = rate(jobs, started.elapsed());
    worker.shutdown().await;
    rate
}

fn rate(jobs: usize, took: Duration) -> f64 {
    jobs as f64 / took.as_secs_f64()
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
