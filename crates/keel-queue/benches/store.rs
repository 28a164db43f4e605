//! The job store alone, without HTTP: how many jobs per second it adds in bulk and processes
//! (fetch a batch, complete it) with a few concurrent workers. Run with
//! `cargo bench -p keel-queue --bench store -- [jobs] [workers] [batch]`.

use std::time::{Duration, Instant};

use keel_core::Clock;
use keel_queue::{Durability, NewJob, SqliteStore, Store};
use serde_json::json;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (jobs, workers, batch) = (arg(0, 50_000), arg(1, 2), arg(2, 50));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(
        &dir.path().join("queue.db"),
        Durability::Normal,
        Clock::system(),
    )
    .expect("the store opens");

    let started = Instant::now();
    for chunk in 0..jobs.div_ceil(1000) {
        let n = 1000.min(jobs - chunk * 1000);
        let new = (0..n)
            .map(|i| NewJob::new("noop", json!({"n": chunk * 1000 + i, "user": "someone"})))
            .collect();
        store.add("bench", new).await.expect("add");
    }
    let added = started.elapsed();

    let started = Instant::now();
    let loops = (0..workers).map(|w| {
        let store = &store;
        async move {
            let worker = format!("w{w}");
            loop {
                let fetched = store
                    .fetch("bench", &worker, batch, Duration::from_secs(60))
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
    futures_join_all(loops).await;
    let processed = started.elapsed();
    println!(
        "add      {:>9.0} jobs/s\nprocess  {:>9.0} jobs/s",
        jobs as f64 / added.as_secs_f64(),
        jobs as f64 / processed.as_secs_f64()
    );
}

/// Runs the futures concurrently on this thread until all are done.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
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
