//! `/api/v1/queues` and `/api/v1/jobs` against the real server: producers, pull workers,
//! leases, retries, long-polling, cancel, pause, bad input and roles.

use keel_auth::Role;
use keel_test::{Sent, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn post(s: &TestServer, path: &str, body: Value) -> reqwest::RequestBuilder {
    s.request(Method::POST, path, Role::Worker).json(&body)
}

/// A body-less POST by a worker (pause, resume, promote, retry, …).
fn action(s: &TestServer, path: &str) -> reqwest::RequestBuilder {
    s.request(Method::POST, path, Role::Worker)
}

async fn body(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

async fn fetch(s: &TestServer, queue: &str, request: Value) -> Vec<Value> {
    let resp = post(s, &format!("/api/v1/queues/{queue}/fetch"), request)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    body(resp).await["jobs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_job_goes_from_producer_to_worker_and_back() {
    let s = TestServer::start().await;
    let resp = post(
        &s,
        "/api/v1/queues/mail/jobs",
        json!({"name": "send", "payload": {"to": "a@b"}}),
    )
    .sent()
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id = body(resp).await["id"].as_str().unwrap().to_owned();
    let bulk = post(
        &s,
        "/api/v1/queues/mail/jobs",
        json!({"jobs": [
            {"name": "later", "delay": "1h"},
            {"name": "urgent", "priority": -1, "attempts": 1}
        ]}),
    )
    .sent()
    .await;
    assert_eq!(bulk.status(), StatusCode::CREATED);
    assert_eq!(body(bulk).await["ids"].as_array().unwrap().len(), 2);

    let jobs = fetch(
        &s,
        "mail",
        json!({"max": 10, "lease": "30s", "worker": "w1"}),
    )
    .await;
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["urgent", "send"],
        "priority first; the delayed job waits"
    );
    let send = &jobs[1];
    assert_eq!(
        (send["id"].as_str(), send["attempt"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    let token = send["token"].as_str().unwrap();

    let wrong = post(
        &s,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": "nope"}),
    )
    .sent()
    .await;
    let (status, problem) = keel_test::problem(wrong).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        problem["detail"].as_str().unwrap().contains("token"),
        "{problem}"
    );

    let beat = post(
        &s,
        &format!("/api/v1/jobs/{id}/heartbeat"),
        json!({"token": token, "extend": "1m"}),
    )
    .sent()
    .await;
    assert_eq!(beat.status(), StatusCode::OK);
    assert!(body(beat).await["lease_expires_at"].as_u64().unwrap() > 0);
    let done = post(
        &s,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": token, "result": {"sent": true}}),
    )
    .sent()
    .await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);

    let job = body(
        s.get(&format!("/api/v1/queues/mail/jobs/{id}"))
            .sent()
            .await,
    )
    .await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["result"], json!({"sent": true}));
    let info = body(s.get("/api/v1/queues/mail").sent().await).await;
    assert_eq!(
        info["counts"],
        json!({"active": 1, "completed": 1, "delayed": 1})
    );

    // The urgent job had one attempt: failing it fails it for good.
    let urgent = &jobs[0];
    let failed = post(
        &s,
        &format!("/api/v1/jobs/{}/fail", urgent["id"].as_str().unwrap()),
        json!({"token": urgent["token"], "error": "smtp down"}),
    )
    .sent()
    .await;
    assert_eq!(body(failed).await["state"], "failed");
}

#[tokio::test]
async fn failures_retry_and_fetches_wait_for_new_jobs() {
    let s = TestServer::start().await;
    post(
        &s,
        "/api/v1/queues/q/jobs",
        json!({"name": "flaky", "backoff": {"type": "fixed", "delay": "1h"}}),
    )
    .sent()
    .await;
    let job = fetch(&s, "q", json!({})).await.remove(0);
    let retried = post(
        &s,
        &format!("/api/v1/jobs/{}/fail", job["id"].as_str().unwrap()),
        json!({"token": job["token"], "error": "timeout"}),
    )
    .sent()
    .await;
    assert_eq!(body(retried).await["state"], "delayed");

    // A fetch that waits is answered by the next add.
    let waiting = {
        let request = post(&s, "/api/v1/queues/q/fetch", json!({"wait": "30s"}));
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    post(&s, "/api/v1/queues/q/jobs", json!({"name": "fresh"}))
        .sent()
        .await;
    let resp = waiting.await.unwrap();
    let jobs = body(resp).await["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs[0]["name"], "fresh");
}

#[tokio::test]
async fn cancel_and_pause() {
    let s = TestServer::start().await;
    let ids = body(
        post(
            &s,
            "/api/v1/queues/q/jobs",
            json!({"jobs": [{"name": "a"}, {"name": "b"}]}),
        )
        .sent()
        .await,
    )
    .await;
    let (a, b) = (
        ids["ids"][0].as_str().unwrap().to_owned(),
        ids["ids"][1].as_str().unwrap().to_owned(),
    );
    let active = fetch(&s, "q", json!({})).await.remove(0);
    assert_eq!(active["id"], a.as_str());
    let cancel = |id: String| {
        s.request(
            Method::DELETE,
            &format!("/api/v1/queues/q/jobs/{id}"),
            Role::Worker,
        )
        .sent()
    };
    assert_eq!(body(cancel(b).await).await["state"], "cancelled");
    assert_eq!(body(cancel(a.clone()).await).await["state"], "active");
    let beat = post(
        &s,
        &format!("/api/v1/jobs/{a}/heartbeat"),
        json!({"token": active["token"]}),
    )
    .sent()
    .await;
    let (status, problem) = keel_test::problem(beat).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        problem["detail"].as_str().unwrap().contains("cancelled"),
        "{problem}"
    );

    let pause = action(&s, "/api/v1/queues/q/pause").sent().await;
    assert_eq!(pause.status(), StatusCode::NO_CONTENT);
    post(&s, "/api/v1/queues/q/jobs", json!({"name": "c"}))
        .sent()
        .await;
    assert!(fetch(&s, "q", json!({})).await.is_empty());
    action(&s, "/api/v1/queues/q/resume").sent().await;
    assert_eq!(fetch(&s, "q", json!({})).await[0]["name"], "c");
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_roles_are_enforced() {
    let s = TestServer::start().await;
    let cases = [
        (
            json!({"jobs": [{"name": "ok"}, {"name": "bad", "attempts": 0}]}),
            "jobs[1].options.attempts",
        ),
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "backoff": {"type": "fixed", "delay": "1s", "jitter": 2}}),
            "jitter",
        ),
    ];
    for (request, field) in cases {
        let resp = post(&s, "/api/v1/queues/q/jobs", request.clone())
            .sent()
            .await;
        let (status, problem) = keel_test::problem(resp).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{request}: {problem}"
        );
    }
    let unknown = post(
        &s,
        "/api/v1/queues/q/jobs",
        json!({"name": "x", "delay": "soon"}),
    )
    .sent()
    .await;
    assert!(unknown.status().is_client_error());
    let bad_queue = post(&s, "/api/v1/queues/has%20space/jobs", json!({"name": "x"}))
        .sent()
        .await;
    assert_eq!(bad_queue.status(), StatusCode::BAD_REQUEST);
    let bad_max = post(&s, "/api/v1/queues/q/fetch", json!({"max": 0}))
        .sent()
        .await;
    assert_eq!(bad_max.status(), StatusCode::BAD_REQUEST);
    assert!(
        s.get("/api/v1/queues/q").sent().await.status() == StatusCode::NOT_FOUND,
        "nothing was written"
    );
    assert_eq!(
        s.get("/api/v1/jobs/none/x").sent().await.status(),
        StatusCode::NOT_FOUND
    );
    let viewer = s
        .request(Method::POST, "/api/v1/queues/q/jobs", Role::Viewer)
        .json(&json!({"name": "x"}))
        .sent()
        .await;
    assert_eq!(viewer.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn batch_completions_answer_each_job() {
    let s = TestServer::start().await;
    post(
        &s,
        "/api/v1/queues/q/jobs",
        json!({"jobs": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
    )
    .sent()
    .await;
    let jobs = fetch(&s, "q", json!({"max": 3})).await;
    let mut batch: Vec<Value> = jobs
        .iter()
        .map(|j| json!({"id": j["id"], "token": j["token"], "result": j["name"]}))
        .collect();
    batch[1]["token"] = json!("stale");
    let resp = post(&s, "/api/v1/jobs/complete", json!({"jobs": batch}))
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let results = body(resp).await["results"].as_array().unwrap().clone();
    let oks: Vec<bool> = results.iter().map(|r| r["ok"].as_bool().unwrap()).collect();
    assert_eq!(oks, [true, false, true]);
    assert_eq!(results[1]["status"], 409);
    let info = body(s.get("/api/v1/queues/q").sent().await).await;
    assert_eq!(info["counts"], json!({"active": 1, "completed": 2}));
}

#[tokio::test]
async fn batch_failures_answer_each_job_and_timeouts_are_taken() {
    let s = TestServer::start().await;
    post(
        &s,
        "/api/v1/queues/q/jobs",
        json!({"jobs": [
            {"name": "a", "timeout": "5m"},
            {"name": "b", "attempts": 1},
            {"name": "c"}
        ]}),
    )
    .sent()
    .await;
    let jobs = fetch(&s, "q", json!({"max": 3})).await;
    let failures = json!({"jobs": [
        {"id": jobs[0]["id"], "token": jobs[0]["token"], "error": "e1", "retry_after": "1h"},
        {"id": jobs[1]["id"], "token": jobs[1]["token"], "error": "e2"},
        {"id": jobs[2]["id"], "token": "stale", "error": "e3"}
    ]});
    let results = body(post(&s, "/api/v1/jobs/fail", failures).sent().await).await;
    let results = results["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["state"], "delayed");
    assert_eq!(results[1]["state"], "failed", "its only attempt");
    assert_eq!(
        (&results[2]["ok"], &results[2]["status"]),
        (&json!(false), &json!(409))
    );
    let a = body(
        s.get(&format!(
            "/api/v1/queues/q/jobs/{}",
            jobs[0]["id"].as_str().unwrap()
        ))
        .sent()
        .await,
    )
    .await;
    assert_eq!(a["timeout_ms"], 300_000);
    let bad = post(
        &s,
        "/api/v1/queues/q/jobs",
        json!({"name": "x", "timeout": "0s"}),
    )
    .sent()
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_fetch_reports_the_last_batch_and_takes_the_next() {
    let s = TestServer::start().await;
    let names: Vec<Value> = (0..4).map(|i| json!({"name": format!("j{i}")})).collect();
    post(&s, "/api/v1/queues/q/jobs", json!({"jobs": names}))
        .sent()
        .await;
    let first = fetch(&s, "q", json!({"max": 2})).await;
    let mut done: Vec<Value> = first
        .iter()
        .map(|j| json!({"id": j["id"], "token": j["token"]}))
        .collect();
    done.push(json!({"id": first[0]["id"], "token": "stale"}));
    let reply = body(
        post(
            &s,
            "/api/v1/queues/q/fetch",
            json!({"max": 2, "complete": done, "wait": "30s"}),
        )
        .sent()
        .await,
    )
    .await;
    let outcomes: Vec<bool> = reply["completed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(outcomes, [true, true, false]);
    let next: Vec<&str> = reply["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(next, ["j2", "j3"]);
    // With completions and nothing ready, the call answers at once instead of long-polling.
    let done: Vec<Value> = reply["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| json!({"id": j["id"], "token": j["token"]}))
        .collect();
    let started = std::time::Instant::now();
    let last = body(
        post(
            &s,
            "/api/v1/queues/q/fetch",
            json!({"complete": done, "wait": "30s"}),
        )
        .sent()
        .await,
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    assert_eq!(last["jobs"], json!([]));
    let info = body(s.get("/api/v1/queues/q").sent().await).await;
    assert_eq!(info["counts"], json!({"completed": 4}));
}

#[tokio::test]
async fn declared_queues_apply_their_limits_and_job_defaults() {
    let mut deliver = keel_queue::DeliverSettings::to("http://127.0.0.1:9/hook");
    deliver.secret = Some(keel_core::Secret::new("hook-secret-value"));
    deliver.headers.insert(
        "Authorization".into(),
        keel_core::Secret::new("Bearer app-token-value"),
    );
    let s = TestServer::start_with(
        |c| {
            c.queues = vec![
                keel_queue::QueueSettings {
                    name: "capped".into(),
                    concurrency: Some(2),
                    rate_limit: Some(keel_queue::RateLimit {
                        max: 100,
                        per: keel_core::HumanDuration::from_secs(1),
                    }),
                    attempts: Some(7),
                    backoff: Some(keel_queue::BackoffSettings {
                        kind: keel_queue::BackoffKind::Fixed,
                        delay: keel_core::HumanDuration::from_secs(7),
                        max_delay: None,
                        jitter: 0.0,
                    }),
                    ..Default::default()
                },
                keel_queue::QueueSettings {
                    name: "pushed".into(),
                    deliver: Some(deliver),
                    ..Default::default()
                },
            ];
        },
        Vec::new(),
    )
    .await;
    // A delivering queue shows its endpoint and breaker; its secrets show nowhere.
    let pushed = body(s.get("/api/v1/queues/pushed").sent().await).await;
    assert_eq!(pushed["delivery"]["url"], "http://127.0.0.1:9/hook");
    assert_eq!(pushed["delivery"]["breaker"], "closed");
    let info = s
        .get("/api/v1/system/info")
        .sent()
        .await
        .text()
        .await
        .unwrap();
    assert!(info.contains("127.0.0.1:9/hook"), "the config is shown");
    assert!(!info.contains("hook-secret-value") && !info.contains("app-token-value"));
    // Known before its first job, with its limits.
    let info = body(s.get("/api/v1/queues/capped").sent().await).await;
    assert_eq!(info["counts"], json!({}));
    assert_eq!(info["limits"]["concurrency"], 2);
    assert_eq!(
        info["limits"]["rate_limit"],
        json!({"max": 100, "per": "1s"})
    );
    let listed = body(s.get("/api/v1/queues").sent().await).await;
    assert_eq!(listed["queues"][0]["name"], "capped");
    assert_eq!(listed["queues"][1]["name"], "pushed");

    let names: Vec<Value> = (0..3).map(|i| json!({"name": format!("j{i}")})).collect();
    post(&s, "/api/v1/queues/capped/jobs", json!({"jobs": names}))
        .sent()
        .await;
    let first = fetch(&s, "capped", json!({"max": 10})).await;
    assert_eq!(first.len(), 2, "the concurrency cap");
    assert_eq!(first[0]["max_attempts"], 7, "the queue's default attempts");
    let job = body(
        s.get(&format!(
            "/api/v1/queues/capped/jobs/{}",
            first[0]["id"].as_str().unwrap()
        ))
        .sent()
        .await,
    )
    .await;
    assert_eq!(
        job["backoff"],
        json!({"type": "fixed", "delay_ms": 7000, "jitter": 0.0}),
        "the queue's default backoff"
    );
    // A waiting fetch gets the third job as soon as a slot frees up.
    let waiting = post(&s, "/api/v1/queues/capped/fetch", json!({"wait": "30s"})).send();
    let complete = post(
        &s,
        &format!("/api/v1/jobs/{}/complete", first[0]["id"].as_str().unwrap()),
        json!({"token": first[0]["token"]}),
    )
    .sent();
    let (waiting, _) = tokio::join!(waiting, complete);
    let third = body(waiting.unwrap()).await;
    assert_eq!(third["jobs"][0]["name"], "j2");
}

#[tokio::test]
async fn schedules_add_jobs_and_bad_ones_are_refused() {
    let s = TestServer::start_with(
        |c| c.queue.stall_check_interval = keel_core::HumanDuration::from_millis(50),
        Vec::new(),
    )
    .await;
    let created = post(
        &s,
        "/api/v1/queues/reports/schedules",
        json!({"name": "tick", "every": "1s", "payload": {"n": 1}}),
    )
    .sent()
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = body(created).await;
    assert_eq!(created["every"], "1s");
    // The tick's job arrives at a waiting worker (the wait is only a bound).
    let jobs = fetch(&s, "reports", json!({"wait": "20s"})).await;
    assert_eq!(jobs[0]["name"], "tick");
    assert_eq!(jobs[0]["payload"], json!({"n": 1}));

    let daily = json!({"name": "daily", "cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"});
    post(&s, "/api/v1/queues/reports/schedules", daily)
        .sent()
        .await;
    let listed = body(s.get("/api/v1/queues/reports/schedules").sent().await).await;
    let names: Vec<&str> = listed["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["daily", "tick"]);
    assert_eq!(listed["schedules"][0]["timezone"], "Europe/Berlin");

    for (bad, field) in [
        (json!({"name": "x", "cron": "61 * * * *"}), "cron"),
        (
            json!({"name": "x", "cron": "* * * * *", "timezone": "Mars/Base"}),
            "timezone",
        ),
        (json!({"name": "x", "every": "10ms"}), "every"),
        (
            json!({"name": "x", "cron": "* * * * *", "every": "1m"}),
            "cron, every",
        ),
        (json!({"name": "x"}), "cron, every"),
    ] {
        let resp = post(&s, "/api/v1/queues/reports/schedules", bad.clone())
            .sent()
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let detail = body(resp).await["detail"].as_str().unwrap().to_owned();
        assert!(detail.starts_with(&format!("{field}:")), "{bad}: {detail}");
    }

    let delete = |name: &str| {
        s.request(
            Method::DELETE,
            &format!("/api/v1/queues/reports/schedules/{name}"),
            Role::Worker,
        )
        .sent()
    };
    assert_eq!(delete("tick").await.status(), StatusCode::NO_CONTENT);
    assert_eq!(delete("tick").await.status(), StatusCode::NOT_FOUND);
}

/// Reads SSE chunks until `n` events (`event:` lines) have arrived; their names in order.
async fn sse_events(resp: &mut reqwest::Response, n: usize) -> Vec<String> {
    let mut text = String::new();
    let read = async {
        loop {
            let names: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("event: ").or(l.strip_prefix("event:")))
                .map(|l| l.trim().to_owned())
                .collect();
            if names.len() >= n {
                return names;
            }
            let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("the events arrive")
}

#[tokio::test]
async fn job_events_stream_as_server_sent_events() {
    let s = TestServer::start().await;
    let mut stream = s.get("/api/v1/events?queue=q").sent().await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // Another queue's events are not sent.
    post(&s, "/api/v1/queues/other/jobs", json!({"name": "x"}))
        .sent()
        .await;
    post(&s, "/api/v1/queues/q/jobs", json!({"name": "a"}))
        .sent()
        .await;
    let job = fetch(&s, "q", json!({})).await.remove(0);
    let id = job["id"].as_str().unwrap();
    post(
        &s,
        &format!("/api/v1/jobs/{id}/progress"),
        json!({"token": job["token"], "progress": 50}),
    )
    .sent()
    .await;
    post(
        &s,
        &format!("/api/v1/jobs/{id}/complete"),
        json!({"token": job["token"]}),
    )
    .sent()
    .await;
    action(&s, "/api/v1/queues/q/pause").sent().await;
    let names = sse_events(&mut stream, 5).await;
    assert_eq!(
        names,
        ["added", "active", "progress", "completed", "paused"]
    );
}

#[tokio::test]
async fn queues_are_listed_measured_and_checked() {
    let s = TestServer::start_with(
        |c| c.queue.stall_check_interval = keel_core::HumanDuration::from_millis(20),
        Vec::new(),
    )
    .await;
    post(
        &s,
        "/api/v1/queues/reports/jobs",
        json!({"jobs": [{"name": "a"}, {"name": "b"}]}),
    )
    .sent()
    .await;
    let job = fetch(&s, "reports", json!({})).await.remove(0);
    post(
        &s,
        &format!("/api/v1/jobs/{}/complete", job["id"].as_str().unwrap()),
        json!({"token": job["token"]}),
    )
    .sent()
    .await;
    action(&s, "/api/v1/queues/idle/pause").sent().await;

    let list = body(s.get("/api/v1/queues").sent().await).await;
    let no_limits = json!({"concurrency": null, "rate_limit": null, "group_rate_limit": null});
    assert_eq!(
        list["queues"],
        json!([
            {"name": "idle", "paused": true, "counts": {}, "limits": no_limits},
            {"name": "reports", "paused": false, "counts": {"completed": 1, "waiting": 1},
             "limits": no_limits}
        ])
    );
    let health = body(s.public("/health/detailed").await).await;
    assert_eq!(
        health["checks"]["queue:store"][0]["status"], "pass",
        "{health}"
    );
    assert_eq!(
        health["checks"]["queue:depth"][0]["status"], "pass",
        "{health}"
    );

    // The job gauges follow the maintenance round; the event counters are immediate.
    let mut metrics = String::new();
    for _ in 0..250 {
        metrics = s.get("/metrics").sent().await.text().await.unwrap();
        if metrics.contains("keel_queue_jobs{queue=\"reports\",state=\"completed\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for line in [
        "keel_queue_jobs{queue=\"reports\",state=\"completed\"} 1",
        "keel_queue_jobs{queue=\"reports\",state=\"waiting\"} 1",
        "keel_queue_events_total{queue=\"reports\",event=\"added\"} 2",
        "keel_queue_events_total{queue=\"reports\",event=\"completed\"} 1",
        "keel_queue_stalled_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    for line in [
        "keel_queue_wait_seconds_count{queue=\"reports\"} 1",
        "keel_queue_processing_seconds_count{queue=\"reports\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let stats = body(s.get("/api/v1/stats").sent().await).await;
    assert_eq!(stats["queues"]["events"]["reports"]["added"], 2, "{stats}");

    // The queue's last minutes: throughput, mean wait and run time, the oldest waiting job.
    let info = body(s.get("/api/v1/queues/reports").sent().await).await;
    let minute = &info["last_1m"];
    assert_eq!(
        (&minute["completed"], &minute["failed"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(minute["per_second"], json!(1.0 / 60.0));
    assert!(minute["avg_wait_ms"].as_f64().unwrap() >= 0.0, "{info}");
    assert!(
        minute["avg_processing_ms"].as_f64().unwrap() >= 0.0,
        "{info}"
    );
    assert_eq!(info["last_5m"]["completed"], 1);
    assert!(
        info["oldest_waiting_ms"].as_u64().is_some(),
        "job b waits: {info}"
    );
}

#[tokio::test]
async fn progress_promote_and_retry_over_http() {
    let s = TestServer::start().await;
    let ids = body(
        post(
            &s,
            "/api/v1/queues/q/jobs",
            json!({"jobs": [
                {"name": "export", "attempts": 1},
                {"name": "later", "delay": "1h"}
            ]}),
        )
        .sent()
        .await,
    )
    .await;
    let (export, later) = (
        ids["ids"][0].as_str().unwrap().to_owned(),
        ids["ids"][1].as_str().unwrap().to_owned(),
    );
    let job = fetch(&s, "q", json!({})).await.remove(0);
    let progress = post(
        &s,
        &format!("/api/v1/jobs/{export}/progress"),
        json!({"token": job["token"], "progress": 30, "data": {"rows": 300}}),
    )
    .sent()
    .await;
    assert_eq!(progress.status(), StatusCode::NO_CONTENT);
    let over = post(
        &s,
        &format!("/api/v1/jobs/{export}/progress"),
        json!({"token": job["token"], "progress": 130}),
    )
    .sent()
    .await;
    assert_eq!(over.status(), StatusCode::BAD_REQUEST);
    let seen = body(
        s.get(&format!("/api/v1/queues/q/jobs/{export}"))
            .sent()
            .await,
    )
    .await;
    assert_eq!(
        (seen["progress"].as_u64(), &seen["progress_data"]),
        (Some(30), &json!({"rows": 300}))
    );

    post(
        &s,
        &format!("/api/v1/jobs/{export}/fail"),
        json!({"token": job["token"], "error": "disk full"}),
    )
    .sent()
    .await;
    let retried = action(&s, &format!("/api/v1/queues/q/jobs/{export}/retry"))
        .sent()
        .await;
    assert_eq!(body(retried).await["state"], "waiting");
    let promoted = action(&s, &format!("/api/v1/queues/q/jobs/{later}/promote"))
        .sent()
        .await;
    assert_eq!(body(promoted).await["state"], "waiting");
    let again = action(&s, &format!("/api/v1/queues/q/jobs/{later}/promote"))
        .sent()
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let elsewhere = action(&s, &format!("/api/v1/queues/other/jobs/{later}/retry"))
        .sent()
        .await;
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
    let names: Vec<Value> = fetch(&s, "q", json!({"max": 10}))
        .await
        .iter()
        .map(|j| j["name"].clone())
        .collect();
    assert_eq!(names, [json!("export"), json!("later")]);
}

#[tokio::test]
async fn jobs_are_listed_newest_first_and_searchable() {
    let s = TestServer::start().await;
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"name": "mail", "payload": {"to": format!("user{i}@example.com")}}))
        .collect();
    post(&s, "/api/v1/queues/q/jobs", json!({"jobs": jobs}))
        .sent()
        .await;
    let page = body(s.get("/api/v1/queues/q/jobs?limit=3").sent().await).await;
    let first: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["payload"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        first,
        [
            "user4@example.com",
            "user3@example.com",
            "user2@example.com"
        ]
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = body(
        s.get(&format!("/api/v1/queues/q/jobs?limit=3&cursor={cursor}"))
            .sent()
            .await,
    )
    .await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let found = body(s.get("/api/v1/queues/q/jobs?search=user3@").sent().await).await;
    assert_eq!(found["jobs"].as_array().unwrap().len(), 1);
    let (status, problem) =
        keel_test::problem(s.get("/api/v1/queues/q/jobs?state=done").sent().await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"].as_str().unwrap().starts_with("state:"),
        "{problem}"
    );
    let bad_cursor = s.get("/api/v1/queues/q/jobs?cursor=xyz").sent().await;
    assert_eq!(bad_cursor.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn clean_needs_admin_and_retry_failed_revives_failed_jobs() {
    let s = TestServer::start().await;
    post(
        &s,
        "/api/v1/queues/q/jobs",
        json!({"jobs": [{"name": "a", "attempts": 1}, {"name": "b"}]}),
    )
    .sent()
    .await;
    for job in fetch(&s, "q", json!({"max": 2})).await {
        let id = job["id"].as_str().unwrap();
        if job["name"] == "a" {
            post(
                &s,
                &format!("/api/v1/jobs/{id}/fail"),
                json!({"token": job["token"], "error": "x"}),
            )
            .sent()
            .await;
        } else {
            post(
                &s,
                &format!("/api/v1/jobs/{id}/complete"),
                json!({"token": job["token"]}),
            )
            .sent()
            .await;
        }
    }
    let as_worker = s
        .request(
            Method::DELETE,
            "/api/v1/queues/q/jobs?state=completed",
            Role::Worker,
        )
        .sent()
        .await;
    assert_eq!(as_worker.status(), StatusCode::FORBIDDEN);
    let cleaned = s
        .request(
            Method::DELETE,
            "/api/v1/queues/q/jobs?state=completed&older_than=0s",
            Role::Admin,
        )
        .sent()
        .await;
    assert_eq!(body(cleaned).await["removed"], 1);
    let bad = s
        .request(
            Method::DELETE,
            "/api/v1/queues/q/jobs?state=waiting",
            Role::Admin,
        )
        .sent()
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let retried = action(&s, "/api/v1/queues/q/retry-failed").sent().await;
    assert_eq!(body(retried).await["retried"], 1);
    assert_eq!(fetch(&s, "q", json!({})).await[0]["name"], "a");
}

#[tokio::test]
async fn unknown_queues_are_404_and_deleting_one_needs_admin_and_confirm() {
    let s = TestServer::start().await;
    for path in [
        "/api/v1/queues/nope",
        "/api/v1/queues/nope/jobs",
        "/api/v1/queues/nope/schedules",
    ] {
        let resp = s.get(path).sent().await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    post(
        &s,
        "/api/v1/queues/gone/jobs",
        json!({"jobs": [{"name": "a"}, {"name": "b"}]}),
    )
    .sent()
    .await;
    let delete = |path: &str, role| s.request(Method::DELETE, path, role).sent();
    let as_worker = delete("/api/v1/queues/gone?confirm=true", Role::Worker).await;
    assert_eq!(as_worker.status(), StatusCode::FORBIDDEN);
    let unconfirmed = delete("/api/v1/queues/gone", Role::Admin).await;
    assert_eq!(unconfirmed.status(), StatusCode::BAD_REQUEST);
    let detail = body(unconfirmed).await["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(detail.starts_with("confirm:"), "{detail}");
    let deleted = delete("/api/v1/queues/gone?confirm=true", Role::Admin).await;
    assert_eq!(body(deleted).await, json!({"removed": 2}));
    let after = s.get("/api/v1/queues/gone/jobs").sent().await;
    assert_eq!(after.status(), StatusCode::NOT_FOUND);
    let again = delete("/api/v1/queues/gone?confirm=true", Role::Admin).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
