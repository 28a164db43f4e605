//! `Queues`: long-polling fetches, payload limits, stalled-job recovery in the background.

use std::time::Duration;

use keel_core::{ByteSize, Clock, HumanDuration};
use keel_queue::{
    Durability, FetchRequest, JobState, NewJob, QueueConfig, QueueError, Queues, SqliteStore,
};
use serde_json::json;

fn queues(dir: &tempfile::TempDir, config: QueueConfig) -> Queues {
    let store = SqliteStore::open(
        &dir.path().join("q.db"),
        Durability::Normal,
        Clock::system(),
    )
    .unwrap();
    Queues::new(store, config)
}

fn request(wait_ms: u64) -> FetchRequest {
    FetchRequest {
        worker: "w".into(),
        max: 10,
        lease: None,
        wait: Duration::from_millis(wait_ms),
    }
}

#[tokio::test]
async fn a_waiting_fetch_returns_the_job_added_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let q = queues(&dir, QueueConfig::default());
    let waiting = {
        let q = q.clone();
        tokio::spawn(async move { q.fetch("mail", &request(30_000)).await })
    };
    tokio::task::yield_now().await;
    q.add("mail", vec![NewJob::new("send", json!({"to": "a@b"}))])
        .await
        .unwrap();
    let jobs = waiting.await.unwrap().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job.payload, json!({"to": "a@b"}));
    // Nothing left: a fetch with a short wait returns empty.
    assert!(q.fetch("mail", &request(20)).await.unwrap().is_empty());
}

#[tokio::test]
async fn payloads_over_the_limit_and_bad_queue_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = QueueConfig::default();
    config.max_payload = ByteSize(100);
    let q = queues(&dir, config);
    let big = NewJob::new("x", json!("y".repeat(200)));
    let err = q
        .add("q", vec![NewJob::new("ok", json!(1)), big])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QueueError::Invalid { field, .. } if field == "jobs[1].payload"),
        "{err:?}"
    );
    assert!(q.counts("q").await.unwrap().is_empty(), "nothing written");
    assert!(matches!(
        q.add("no spaces", vec![NewJob::new("a", json!(1))]).await,
        Err(QueueError::Invalid { .. })
    ));
}

#[tokio::test]
async fn the_maintenance_task_recovers_expired_leases() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = QueueConfig::default();
    config.stall_check_interval = HumanDuration::from_millis(10);
    let q = queues(&dir, config);
    let id = q
        .add("q", vec![NewJob::new("a", json!(1))])
        .await
        .unwrap()
        .remove(0);
    let mut short = request(0);
    short.lease = Some(Duration::from_millis(1));
    q.fetch("q", &short).await.unwrap();
    let maintenance = q.spawn_maintenance();
    // The recovered job is handed out again; the wait is only a bound.
    let again = q.fetch("q", &request(30_000)).await.unwrap();
    maintenance.abort();
    assert_eq!(again[0].job.id, id);
    assert_eq!((again[0].job.attempts_made, again[0].job.stalls), (2, 1));
    assert_eq!(q.get(&id).await.unwrap().unwrap().state, JobState::Active);
}
