//! In-process workers on a real SQLite store: concurrency bound, typed outcomes, panics,
//! cancellation of a running job, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_core::Clock;
use keel_queue::{Durability, JobState, NewJob, Outcome, QueueConfig, Queues, SqliteStore, Worker};
use serde_json::json;

fn queues(dir: &tempfile::TempDir, clock: Clock) -> Queues {
    let store = SqliteStore::open(&dir.path().join("q.db"), Durability::Normal, clock).unwrap();
    Queues::new(store, QueueConfig::default())
}

/// Waits (bounded) until `queue` has `n` jobs in `state`.
async fn until_count(q: &Queues, queue: &str, state: JobState, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let counts = q.counts(queue).await.unwrap();
        if counts.get(state.as_str()).copied().unwrap_or(0) == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue}: waiting for {n} {state:?}, have {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_every_job_with_at_most_concurrency_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = queues(&dir, Clock::system());
    let jobs = (0..200).map(|i| NewJob::new("n", json!(i))).collect();
    q.add("q", jobs).await.unwrap();
    let (running, most, seen) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let worker = {
        let (running, most, seen) = (running.clone(), most.clone(), seen.clone());
        q.worker("q")
            .concurrency(4)
            .run(move |job| {
                let (running, most, seen) = (running.clone(), most.clone(), seen.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    seen.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Outcome::Done(json!({ "doubled": job.payload.as_i64().unwrap() * 2 }))
                }
            })
            .unwrap()
    };
    until_count(&q, "q", JobState::Completed, 200).await;
    worker.shutdown().await;
    assert_eq!(seen.load(Ordering::SeqCst), 200, "each job ran once");
    assert!(most.load(Ordering::SeqCst) <= 4, "concurrency bound held");
    let page = q.list("q", Default::default(), None, 1).await.unwrap();
    let job = &page.jobs[0];
    assert_eq!(
        job.result,
        Some(json!({ "doubled": job.payload.as_i64().unwrap() * 2 }))
    );
}

async fn outcome_of(q: &Queues, name: &str) -> keel_queue::Job {
    let id = q
        .add("outcomes", vec![NewJob::new(name, json!(null))])
        .await
        .unwrap()
        .remove(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let job = q.get(&id).await.unwrap().unwrap();
        if !matches!(job.state, JobState::Waiting | JobState::Active) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never finished"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn outcomes_decide_what_happens_next() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, _mock) = Clock::mock();
    let now = clock.unix_ms();
    let q = queues(&dir, clock);
    let worker: Worker = q
        .worker("outcomes")
        .run(|job| async move {
            match job.name.as_str() {
                "fail" => Outcome::fail("bad input"),
                "later" => Outcome::retry_after("rate limited", Duration::from_secs(3600)),
                "error" => Err::<serde_json::Value, _>("flaky").into(),
                "panic" => panic!("handler bug"),
                _ => ().into(),
            }
        })
        .unwrap();

    let done = outcome_of(&q, "ok").await;
    assert_eq!((done.state, done.result), (JobState::Completed, None));

    let failed = outcome_of(&q, "fail").await;
    assert_eq!(
        failed.state,
        JobState::Failed,
        "no retry despite attempts left"
    );
    assert_eq!(failed.errors, ["bad input"]);

    let later = outcome_of(&q, "later").await;
    assert_eq!(later.state, JobState::Delayed);
    assert_eq!(
        later.run_at,
        now + 3_600_000,
        "retry_after replaces the backoff"
    );

    let flaky = outcome_of(&q, "error").await;
    assert_eq!(
        (flaky.state, flaky.errors),
        (JobState::Delayed, vec!["flaky".to_owned()])
    );

    let panicked = outcome_of(&q, "panic").await;
    assert_eq!(
        panicked.state,
        JobState::Delayed,
        "a panic is a failed attempt"
    );
    assert_eq!(panicked.errors, ["the handler panicked"]);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_running_job_is_stopped_and_shutdown_waits_for_running_ones() {
    let dir = tempfile::tempdir().unwrap();
    let q = queues(&dir, Clock::system());
    let ids = q
        .add(
            "q",
            vec![
                NewJob::new("forever", json!(1)),
                NewJob::new("slow", json!(2)),
            ],
        )
        .await
        .unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    let worker = q
        .worker("q")
        .concurrency(2)
        // Renewed every 100 ms: the renewal is where a worker learns of a cancellation.
        .lease(Duration::from_millis(300))
        .run(move |job| {
            let mut released = released.clone();
            async move {
                if job.name == "forever" {
                    std::future::pending::<()>().await;
                }
                let _ = released.wait_for(|r| *r).await;
                Outcome::Done(json!("slow done"))
            }
        })
        .unwrap();
    until_count(&q, "q", JobState::Active, 2).await;
    assert_eq!(q.cancel(&ids[0]).await.unwrap(), JobState::Active);
    until_count(&q, "q", JobState::Cancelled, 1).await;

    let shutdown = tokio::spawn(worker.shutdown());
    tokio::task::yield_now().await;
    assert!(!shutdown.is_finished(), "the slow job is still running");
    release.send(true).unwrap();
    shutdown.await.unwrap();
    let slow = q.get(&ids[1]).await.unwrap().unwrap();
    assert_eq!(
        slow.state,
        JobState::Completed,
        "reported before shutdown returned"
    );
}

#[tokio::test]
async fn a_rate_limit_is_never_exceeded_by_a_busy_worker() {
    let dir = tempfile::tempdir().unwrap();
    let q = queues(&dir, Clock::system());
    let limit = keel_queue::QueueSettings {
        name: "limited".into(),
        rate_limit: Some(keel_queue::RateLimit {
            max: 10,
            per: keel_core::HumanDuration::from_secs(1),
        }),
        ..Default::default()
    };
    q.declare(&[limit]).await.unwrap();
    let jobs = (0..25).map(|i| NewJob::new("n", json!(i))).collect();
    q.add("limited", jobs).await.unwrap();
    let worker = q
        .worker("limited")
        .concurrency(20)
        .run(|_| async { Outcome::Done(json!(null)) })
        .unwrap();
    until_count(&q, "limited", JobState::Completed, 25).await;
    worker.shutdown().await;
    let mut starts: Vec<u64> = q
        .list("limited", Default::default(), None, 100)
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.started_at.unwrap())
        .collect();
    starts.sort_unstable();
    // Wherever a one-second window is placed, it holds at most 10 starts.
    for (i, &at) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|&&s| s < at + 1000).count();
        assert!(
            in_window <= 10,
            "{in_window} starts in the second from {at}: {starts:?}"
        );
    }
}
