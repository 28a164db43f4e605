//! The SQLite store: the conformance suite, durability across reopening, group commit under
//! concurrent writers.

use std::sync::Arc;
use std::time::Duration;

use keel_core::Clock;
use keel_queue::{Durability, JobState, NewJob, SqliteStore, Store, conformance};
use serde_json::json;

#[tokio::test]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(|case, clock| {
        let path = dir.path().join(format!("store-{case}.db"));
        SqliteStore::open(&path, Durability::Normal, clock).unwrap()
    })
    .await;
}

#[tokio::test]
async fn committed_jobs_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let (ids, token) = {
        let store = SqliteStore::open(&path, Durability::Full, Clock::system()).unwrap();
        let ids = store
            .add(
                "q",
                vec![NewJob::new("a", json!(1)), NewJob::new("b", json!(2))],
            )
            .await
            .unwrap();
        let fetched = store
            .fetch("q", "w", 1, Duration::from_secs(60))
            .await
            .unwrap();
        (ids, fetched[0].token.clone())
    };
    let store = SqliteStore::open(&path, Durability::Normal, Clock::system()).unwrap();
    let a = store.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!((a.state, a.payload), (JobState::Active, json!(1)));
    store
        .complete(&ids[0], &token, json!("done"))
        .await
        .unwrap();
    let b = store
        .fetch("q", "w", 1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(b[0].job.id, ids[1]);
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(
            &dir.path().join("q.db"),
            Durability::Normal,
            Clock::system(),
        )
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for t in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                store
                    .add("q", vec![NewJob::new(format!("{t}-{i}"), json!(null))])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.counts("q").await.unwrap().get("waiting"), Some(&1000));
}

#[tokio::test]
async fn a_rate_window_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let (clock, time) = Clock::mock();
    let limits = keel_queue::QueueLimits {
        rate: Some(keel_queue::RateLimit {
            max: 2,
            per: keel_core::HumanDuration::from_secs(60),
        }),
        ..Default::default()
    };
    let jobs = || (0..4).map(|i| NewJob::new("n", json!(i))).collect();
    {
        let store = SqliteStore::open(&path, Durability::Normal, clock.clone()).unwrap();
        store.set_limits("q", limits).await.unwrap();
        store.add("q", jobs()).await.unwrap();
        let lease = Duration::from_secs(300);
        assert_eq!(store.fetch("q", "w", 10, lease).await.unwrap().len(), 2);
    }
    time.advance(Duration::from_secs(30));
    let store = SqliteStore::open(&path, Durability::Normal, clock).unwrap();
    store.set_limits("q", limits).await.unwrap();
    let lease = Duration::from_secs(300);
    assert!(
        store.fetch("q", "w", 10, lease).await.unwrap().is_empty(),
        "the starts before reopening still fill the window"
    );
    time.advance(Duration::from_secs(30));
    assert_eq!(store.fetch("q", "w", 10, lease).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_schedule_fires_once_per_tick_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.db");
    let (clock, time) = Clock::mock();
    let hourly = keel_queue::NewSchedule {
        name: "report".into(),
        repeat: keel_queue::Repeat::Cron {
            expr: "0 * * * *".into(),
            timezone: "Europe/Berlin".into(),
        },
        payload: json!(1),
        attempts: 3,
    };
    let first_tick = {
        let store = SqliteStore::open(&path, Durability::Normal, clock.clone()).unwrap();
        let schedule = store.put_schedule("q", hourly).await.unwrap();
        schedule.next_run_at.unwrap()
    };
    // Down over the first tick and two more; fired by the reopened store: one job.
    time.advance(Duration::from_millis(
        first_tick - clock.unix_ms() + 2 * 3_600_000 + 1,
    ));
    let store = SqliteStore::open(&path, Durability::Normal, clock.clone()).unwrap();
    assert_eq!(store.fire_schedules().await.unwrap(), ["q"]);
    assert!(store.fire_schedules().await.unwrap().is_empty());
    drop(store);
    let store = SqliteStore::open(&path, Durability::Normal, clock).unwrap();
    assert!(
        store.fire_schedules().await.unwrap().is_empty(),
        "not again after reopening"
    );
    let counts = store.counts("q").await.unwrap();
    assert_eq!(counts.get("waiting"), Some(&1));
    let next = store.schedules("q").await.unwrap()[0].next_run_at.unwrap();
    assert_eq!(next, first_tick + 3 * 3_600_000, "the next full hour");
}
