//! Webhook delivery against a real HTTP server started by the test: success with a signed
//! request, retry with backoff, a no-retry answer, Retry-After, timeout, no connection, the
//! breaker opening and closing, and cancellation of a delivery in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use keel_core::{Clock, HumanDuration, MockClock, Secret};
use keel_queue::{
    DeliverSettings, Durability, Job, JobState, NewJob, QueueConfig, QueueSettings, Queues,
    SqliteStore, Worker,
};
use serde_json::{Value, json};

/// What the app answers.
#[derive(Clone)]
enum Answer {
    Ok(Value),
    Status(u16, Vec<(&'static str, &'static str)>),
    Hang,
}

#[derive(Clone)]
struct App {
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
}

async fn hook(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    app.seen.lock().unwrap().push((headers, body));
    let answer = app.answer.lock().unwrap().clone();
    match answer {
        Answer::Ok(value) => axum::Json(value).into_response(),
        Answer::Status(code, headers) => {
            let mut response = (StatusCode::from_u16(code).unwrap(), "boom").into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// A running app at `url`.
async fn app(answer: Answer) -> (App, String) {
    let app = App {
        answer: Arc::new(Mutex::new(answer)),
        seen: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/hook", post(hook))
        .with_state(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, url)
}

struct Setup {
    queues: Queues,
    time: MockClock,
    clock: Clock,
    workers: Vec<Worker>,
    _dir: tempfile::TempDir,
}

async fn deliver_to(deliver: DeliverSettings, config: QueueConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (clock, time) = Clock::mock();
    let store =
        SqliteStore::open(&dir.path().join("q.db"), Durability::Normal, clock.clone()).unwrap();
    let queues = Queues::new(store, config);
    let settings = QueueSettings {
        name: "hooks".into(),
        deliver: Some(deliver),
        ..QueueSettings::default()
    };
    queues.declare(&[settings]).await.unwrap();
    let workers = queues.start_deliveries(&clock).unwrap();
    Setup {
        queues,
        time,
        clock,
        workers,
        _dir: dir,
    }
}

impl Setup {
    async fn add(&self, name: &str) -> String {
        self.queues
            .add("hooks", vec![NewJob::new(name, json!({"n": 1}))])
            .await
            .unwrap()
            .remove(0)
    }

    /// Waits (bounded) until job `id` leaves waiting and active.
    async fn settled(&self, id: &str) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = self.queues.get(id).await.unwrap().unwrap();
            if !matches!(job.state, JobState::Waiting | JobState::Active) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        for worker in self.workers {
            worker.shutdown().await;
        }
    }
}

#[tokio::test]
async fn a_2xx_completes_the_job_with_its_body_and_the_request_is_signed() {
    let (app, url) = app(Answer::Ok(json!({"sent": true}))).await;
    let mut deliver = DeliverSettings::to(&url);
    deliver.secret = Some(Secret::new("hook-secret"));
    deliver
        .headers
        .insert("X-App-Key".into(), Secret::new("k-123"));
    let s = deliver_to(deliver, QueueConfig::default()).await;
    let id = s.add("welcome").await;
    let job = s.settled(&id).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, Some(json!({"sent": true})));

    let (headers, body) = app.seen.lock().unwrap()[0].clone();
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sent["id"], id);
    assert_eq!(sent["name"], "welcome");
    assert_eq!(sent["payload"], json!({"n": 1}));
    assert_eq!(sent["attempt"], 1);
    assert_eq!(headers["keel-job-id"], id.as_str());
    assert_eq!(headers["keel-queue"], "hooks");
    assert_eq!(headers["x-app-key"], "k-123");
    // The app's check: recompute the HMAC over "<t>.<body>".
    let signature = headers["keel-signature"].to_str().unwrap();
    let (t, v1) = signature.split_once(',').unwrap();
    let t: u64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    assert_eq!(t, s.clock.unix_ms() / 1000);
    assert_eq!(
        v1.strip_prefix("v1=").unwrap(),
        keel_queue::webhook_signature("hook-secret", t, &body)
    );
    let report = &s.queues.deliveries()["hooks"];
    assert_eq!((report.delivered, report.failed), (1, 0));
    s.stop().await;
}

#[tokio::test]
async fn failures_retry_after_backoff_or_retry_after_and_no_retry_is_final() {
    let (app, url) = app(Answer::Status(500, vec![])).await;
    let s = deliver_to(DeliverSettings::to(&url), QueueConfig::default()).await;
    let now = s.clock.unix_ms();

    let id = s.add("a").await;
    let job = s.settled(&id).await;
    assert_eq!(job.state, JobState::Delayed);
    assert_eq!(job.errors, ["HTTP 500: boom"]);
    assert_eq!(job.run_at, now + 2_000, "the default backoff: 2 s");

    *app.answer.lock().unwrap() = Answer::Status(429, vec![("Retry-After", "120")]);
    let id = s.add("b").await;
    let job = s.settled(&id).await;
    assert_eq!((job.state, job.run_at), (JobState::Delayed, now + 120_000));

    *app.answer.lock().unwrap() = Answer::Status(400, vec![("Keel-Retry", "false")]);
    let id = s.add("c").await;
    let job = s.settled(&id).await;
    assert_eq!(
        job.state,
        JobState::Failed,
        "attempts were left, but the app said no"
    );
    assert_eq!(job.errors, ["HTTP 400: boom"]);
    s.stop().await;
}

#[tokio::test]
async fn timeouts_and_unreachable_apps_are_retried() {
    let (_app, url) = app(Answer::Hang).await;
    let mut deliver = DeliverSettings::to(&url);
    deliver.timeout = HumanDuration::from_millis(200);
    let s = deliver_to(deliver, QueueConfig::default()).await;
    let id = s.add("slow").await;
    let job = s.settled(&id).await;
    assert_eq!(job.state, JobState::Delayed);
    assert_eq!(job.errors, ["no answer within 200ms"]);
    s.stop().await;

    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let s = deliver_to(DeliverSettings::to(&url), QueueConfig::default()).await;
    let id = s.add("nowhere").await;
    let job = s.settled(&id).await;
    assert_eq!(job.state, JobState::Delayed);
    assert!(
        job.errors[0].starts_with("cannot reach"),
        "{:?}",
        job.errors
    );
    s.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_jobs_wait_and_a_trial_closes_it() {
    let (app, url) = app(Answer::Status(503, vec![])).await;
    let mut deliver = DeliverSettings::to(&url);
    deliver.concurrency = 1;
    deliver.breaker_failures = 2;
    deliver.breaker_cool_down = HumanDuration::from_secs(10);
    let s = deliver_to(deliver, QueueConfig::default()).await;
    let first = s.add("j0").await;
    s.settled(&first).await;
    let second = s.add("j1").await;
    s.settled(&second).await;
    let report = &s.queues.deliveries()["hooks"];
    assert_eq!(report.breaker, keel_resilience::BreakerState::Open);
    assert_eq!(report.breaker_opened, 1);

    // While open, jobs wait with their attempts untouched and the app hears nothing.
    let waiting = s.add("j2").await;
    for _ in 0..5 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(app.seen.lock().unwrap().len(), 2);
    let job = s.queues.get(&waiting).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts_made), (JobState::Waiting, 0));

    // After the cool-down one trial goes through; it succeeds and the breaker closes, and the
    // rest follow (the two failed jobs' backoff is over by now too).
    *app.answer.lock().unwrap() = Answer::Ok(json!("fine"));
    s.time.advance(Duration::from_secs(10));
    for id in [&waiting, &first, &second] {
        assert_eq!(s.settled(id).await.state, JobState::Completed);
    }
    let report = &s.queues.deliveries()["hooks"];
    assert_eq!(report.breaker, keel_resilience::BreakerState::Closed);
    assert_eq!((report.delivered, report.failed), (3, 2));
    assert_eq!(app.seen.lock().unwrap().len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_job_aborts_its_delivery() {
    let (app, url) = app(Answer::Hang).await;
    let config = QueueConfig {
        // Leases are renewed every third of this: the renewal learns of the cancellation.
        default_lease: HumanDuration::from_millis(300),
        ..QueueConfig::default()
    };
    let s = deliver_to(DeliverSettings::to(&url), config).await;
    let id = s.add("long").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.queues.cancel(&id).await.unwrap(), JobState::Active);
    let job = s.settled(&id).await;
    assert_eq!(job.state, JobState::Cancelled);
    s.stop().await;
}
