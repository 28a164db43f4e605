//! Job queues shared through one real Redis (`queue.backend = "redis"`): jobs added on one
//! keel instance are worked on another; an instance killed with `kill -9` while its workers
//! hold leases has those jobs recovered and completed by the other; a schedule fires once per
//! tick with two instances racing to fire it.

use std::collections::HashSet;
use std::time::Duration;

use keel_auth::Role;
use keel_core::{HumanDuration, Secret};
use keel_test::{RedisServer, Sent, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod binary;

/// A keel on `redis` with its jobs there, checking for expired leases and due schedules
/// every 50 ms.
async fn instance(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::start_with(
        move |c| {
            c.redis.url = Some(Secret::new(url));
            c.queue.backend = keel_queue::QueueBackend::Redis;
            c.queue.stall_check_interval = HumanDuration::from_millis(50);
        },
        Vec::new(),
    )
    .await
}

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server.post_as(Role::Worker, path, &body).await
}

async fn get(server: &TestServer, path: &str) -> Value {
    let r = server.request(Method::GET, path, Role::Viewer).sent().await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn jobs_added_on_one_instance_are_worked_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    // Ready with no queue yet: the job store answers.
    let ready = a.get("/ready").sent().await;
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    let jobs: Vec<Value> = (0..30)
        .map(|i| json!({"name": "resize", "payload": {"image": i}}))
        .collect();
    let r = post(&a, "/api/v1/queues/images/jobs", json!({"jobs": jobs})).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A worker of B takes and completes them all.
    let mut done = HashSet::new();
    while done.len() < 30 {
        let r = post(
            &b,
            "/api/v1/queues/images/fetch",
            json!({"max": 8, "lease": "30s", "wait": "2s", "worker": "b-1"}),
        )
        .await;
        let fetched: Value = r.json().await.unwrap();
        let batch = fetched["jobs"].as_array().unwrap().clone();
        assert!(!batch.is_empty(), "waited for jobs added on A");
        let report: Vec<Value> = batch
            .iter()
            .map(|j| json!({"id": j["id"], "token": j["token"], "result": {"ok": true}}))
            .collect();
        let r = post(&b, "/api/v1/jobs/complete", json!({"jobs": report})).await;
        let answer: Value = r.json().await.unwrap();
        for result in answer["results"].as_array().unwrap() {
            assert_eq!(result["ok"], true, "{answer}");
            done.insert(result["id"].as_str().unwrap().to_owned());
        }
    }
    // A sees the outcome.
    let info = get(&a, "/api/v1/queues/images").await;
    assert_eq!(info["counts"]["completed"], 30, "{info}");
    let id = done.iter().next().unwrap();
    let job = get(&a, &format!("/api/v1/queues/images/jobs/{id}")).await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["worker"], Value::Null);
    assert_eq!(job["result"], json!({"ok": true}));
}

#[tokio::test]
async fn a_schedule_fires_once_per_tick_with_two_instances_running() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    // Every second, on the second.
    let r = post(
        &a,
        "/api/v1/queues/ticks/schedules",
        json!({"name": "heartbeat", "cron": "* * * * * *"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Both instances look for due schedules every 50 ms for a few seconds.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let listed = get(&b, "/api/v1/queues/ticks/jobs?limit=100").await;
    let created: Vec<u64> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["created_at"].as_u64().unwrap())
        .collect();
    assert!(created.len() >= 2, "ticks fired: {created:?}");
    // No tick added two jobs: each job was added in a second of its own.
    let seconds: HashSet<u64> = created.iter().map(|ms| ms / 1000).collect();
    assert_eq!(seconds.len(), created.len(), "{created:?}");
    let schedules = get(&b, "/api/v1/queues/ticks/schedules").await;
    assert_eq!(
        schedules["schedules"][0]["name"], "heartbeat",
        "{schedules}"
    );
}

/// A `keel serve` child on `redis_url` with its jobs there.
async fn child(dir: &std::path::Path, redis_url: &str) -> (binary::Served, reqwest::Client) {
    let served = binary::serve(
        dir,
        &[],
        &[
            ("REDIS_URL", redis_url),
            ("KEEL_QUEUE_BACKEND", "redis"),
            ("KEEL_QUEUE_STALL_CHECK_INTERVAL", "100ms"),
        ],
    )
    .await;
    let client = binary::admin_client(dir);
    (served, client)
}

/// POSTs `body` to `url` and returns the JSON answer.
async fn post_json(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client.post(url).json(&body).send().await.unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_leased_through_an_instance_killed_with_sigkill_are_completed_by_another() {
    let redis = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, client_a) = child(dir_a.path(), &redis.url()).await;
    let (b, client_b) = child(dir_b.path(), &redis.url()).await;
    let jobs: Vec<Value> = (0..20)
        .map(|i| json!({"name": "charge", "payload": {"invoice": i}}))
        .collect();
    let r = client_a
        .post(format!("{}/api/v1/queues/billing/jobs", a.base))
        .json(&json!({"jobs": jobs}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // A worker of A takes half of them on a 1 s lease; then A dies without a word.
    let fetched = post_json(
        &client_a,
        format!("{}/api/v1/queues/billing/fetch", a.base),
        json!({"max": 10, "lease": "1s", "worker": "doomed"}),
    )
    .await;
    let leased: HashSet<String> = fetched["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(leased.len(), 10);
    binary::signal(&a.child, "KILL");
    binary::exit_code(&mut a.child).await;

    // B's worker gets the other ten at once, and the ten once their leases expired.
    let mut completed = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while completed.len() < 20 && tokio::time::Instant::now() < deadline {
        let fetched = post_json(
            &client_b,
            format!("{}/api/v1/queues/billing/fetch", b.base),
            json!({"max": 10, "lease": "30s", "wait": "1s", "worker": "survivor"}),
        )
        .await;
        let batch: Vec<Value> = fetched["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| json!({"id": j["id"], "token": j["token"]}))
            .collect();
        if batch.is_empty() {
            continue;
        }
        let answer = post_json(
            &client_b,
            format!("{}/api/v1/jobs/complete", b.base),
            json!({"jobs": batch}),
        )
        .await;
        for result in answer["results"].as_array().unwrap() {
            assert_eq!(result["ok"], true, "{answer}");
            completed.insert(result["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(completed.len(), 20, "every job completed on B");
    let id = leased.iter().next().unwrap();
    let job: Value = client_b
        .get(format!("{}/api/v1/queues/billing/jobs/{id}", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "completed");
    assert_eq!(job["attempts_made"], 2, "{job}");
    let errors = job["errors"].to_string();
    assert!(
        errors.contains("stalled") && errors.contains("doomed"),
        "{job}"
    );
}
