//! The Redis job store against a real `redis-server`: the queue conformance suite every store
//! passes, and what only a shared store has to show — two stores on one Redis (two keel
//! instances) working one queue, and scripts surviving a Redis restart.

use std::time::Duration;

use keel_core::{Clock, Secret};
use keel_queue::conformance;
use keel_queue::{JobState, NewJob, Store};
use keel_redis::{Redis, RedisOptions, RedisStore};
use keel_test::RedisServer;
use serde_json::json;

fn redis(server: &RedisServer, prefix: &str) -> Redis {
    let mut options = RedisOptions::new(Secret::new(server.url()));
    options.key_prefix = prefix.to_owned();
    // Generous: the suite's bulk add of 500 jobs on a loaded CI machine.
    options.command_timeout = Duration::from_secs(5);
    Redis::connect(&options, Clock::system()).unwrap()
}

#[tokio::test]
async fn the_redis_store_passes_the_conformance_suite() {
    let server = RedisServer::start();
    // Every case gets a store of its own: a fresh key prefix on the one Redis.
    conformance::run_all(|case, clock| {
        RedisStore::new(redis(&server, &format!("case{case}:")), clock)
    })
    .await;
}

#[tokio::test]
async fn two_stores_on_one_redis_share_the_queue_and_each_job_is_leased_once() {
    let server = RedisServer::start();
    let a = RedisStore::new(redis(&server, "keel:"), Clock::system());
    let b = RedisStore::new(redis(&server, "keel:"), Clock::system());
    assert!(a.overview().await.unwrap().is_empty(), "no queues yet");
    let jobs: Vec<NewJob> = (0..200)
        .map(|i| NewJob::new("j", json!({"i": i})))
        .collect();
    let ids = a.add("shared", jobs).await.unwrap();
    assert!(ids.iter().all(|id| id.ends_with("~shared")), "{:?}", ids[0]);

    // Both fetch at once, in many rounds: every job is handed out exactly once.
    let lease = Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let (from_a, from_b) = tokio::join!(
            a.fetch("shared", "a", 7, lease),
            b.fetch("shared", "b", 7, lease)
        );
        let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
        if from_a.is_empty() && from_b.is_empty() {
            break;
        }
        // Each completes what the other fetched: the lease is the job's, not the instance's.
        let done_by_b = from_a
            .iter()
            .map(|f| (f.job.id.clone(), f.token.clone(), json!("b")))
            .collect();
        for outcome in b.complete_many(done_by_b).await.unwrap() {
            assert_eq!(outcome.unwrap().state, JobState::Completed);
        }
        for f in &from_b {
            a.complete(&f.job.id, &f.token, json!("a")).await.unwrap();
        }
        seen.extend(from_a.into_iter().chain(from_b).map(|f| f.job.id));
    }
    seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(
        b.counts("shared").await.unwrap().get("completed"),
        Some(&200)
    );
}

#[tokio::test]
async fn scripts_are_loaded_again_after_redis_forgets_them() {
    let server = RedisServer::start();
    let store = RedisStore::new(redis(&server, "keel:"), Clock::system());
    store
        .add("q", vec![NewJob::new("a", json!(1))])
        .await
        .unwrap();
    let flushed: String = redis(&server, "keel:")
        .query(redis::cmd("SCRIPT").arg("FLUSH"))
        .await
        .unwrap();
    assert_eq!(flushed, "OK");
    let fetched = store
        .fetch("q", "w", 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1);
    let done = store
        .complete_many(vec![(
            fetched[0].job.id.clone(),
            fetched[0].token.clone(),
            json!(null),
        )])
        .await
        .unwrap();
    assert_eq!(done[0].as_ref().unwrap().state, JobState::Completed);
    // An id that names no queue of this store is no job, not an error.
    assert_eq!(store.get("not-an-id").await.unwrap(), None);
    let missing = store.complete("0~q", "t", json!(1)).await;
    assert!(
        matches!(missing, Err(keel_queue::QueueError::NoJob(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_bulk_add_of_ten_thousand_jobs_is_not_cut_off_by_the_command_timeout() {
    let server = RedisServer::start();
    // The default command timeout (250 ms); such an add keeps Redis busy for a good part of it.
    let redis = Redis::connect(
        &RedisOptions::new(Secret::new(server.url())),
        Clock::system(),
    )
    .unwrap();
    let store = RedisStore::new(redis, Clock::system());
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new("import", json!({"row": i, "source": "orders.csv"})))
        .collect();
    let ids = store.add("bulk", jobs).await.unwrap();
    assert_eq!(ids.len(), 10_000);
    let counts = store.counts("bulk").await.unwrap();
    assert_eq!(counts.get("waiting"), Some(&10_000));
}

/// Waits (bounded) for the next queue `receiver` is told of.
async fn told(receiver: &mut tokio::sync::broadcast::Receiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_millis(200), receiver.recv())
        .await
        .ok()
        .and_then(Result::ok)
}

#[tokio::test]
async fn each_store_hears_of_the_others_adds_and_not_of_its_own() {
    let server = RedisServer::start();
    let a = RedisStore::new(redis(&server, "keel:"), Clock::system());
    let b = RedisStore::new(redis(&server, "keel:"), Clock::system());
    let mut heard_by_a = a.added_elsewhere().expect("a shared store tells");
    let mut heard_by_b = b.added_elsewhere().expect("a shared store tells");
    // Each subscribes on its own time: add until the other hears (bounded).
    let mut subscribed = false;
    for _ in 0..50 {
        a.add("first", vec![NewJob::new("j", json!(1))])
            .await
            .unwrap();
        if told(&mut heard_by_b).await.as_deref() == Some("first") {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "B never heard of A's adds");
    let mut subscribed = false;
    for _ in 0..50 {
        b.add("second", vec![NewJob::new("j", json!(1))])
            .await
            .unwrap();
        if told(&mut heard_by_a).await.as_deref() == Some("second") {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "A never heard of B's adds");
    // Both listen now. A's own add reaches A's subscription before B's later one does; A
    // passes on B's and never its own.
    a.add("own", vec![NewJob::new("j", json!(1))])
        .await
        .unwrap();
    let mut b_heard = Vec::new();
    while !b_heard.iter().any(|q| q == "own") && b_heard.len() < 50 {
        b_heard.push(told(&mut heard_by_b).await.unwrap_or_default());
    }
    assert!(b_heard.iter().any(|q| q == "own"), "{b_heard:?}");
    b.add("theirs", vec![NewJob::new("j", json!(1))])
        .await
        .unwrap();
    let mut a_heard = Vec::new();
    while !a_heard.iter().any(|q| q == "theirs") && a_heard.len() < 50 {
        a_heard.push(told(&mut heard_by_a).await.unwrap_or_default());
    }
    assert!(a_heard.iter().any(|q| q == "theirs"), "{a_heard:?}");
    assert!(!a_heard.iter().any(|q| q == "own"), "{a_heard:?}");
}
