//! Nothing acknowledged is lost on `kill -9`: the real binary, 20,000 jobs, pull workers over
//! HTTP, a kill mid-run, a restart on the same data directory, and the count of every outcome.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{Value, json};

mod binary;

use binary::{Served, admin_client, serve, signal};

const JOBS: usize = 20_000;
const WORKERS: usize = 4;

/// What the workers saw.
#[derive(Default)]
struct Seen {
    /// Every job id handed to a worker, once per delivery.
    deliveries: Vec<String>,
    /// Jobs whose completion keel acknowledged.
    acked: HashSet<String>,
}

/// A keel serving `dir`, and a client carrying its admin token.
async fn start(dir: &std::path::Path) -> (Served, reqwest::Client) {
    let served = serve(
        dir,
        &[],
        &[
            // Keep every completed job, so all of them can be counted.
            ("KEEL_QUEUE_KEEP_COMPLETED", "1000000"),
            ("KEEL_QUEUE_STALL_CHECK_INTERVAL", "100ms"),
        ],
    )
    .await;
    let client = admin_client(dir);
    (served, client)
}

/// Fetches and completes jobs until keel goes away (requests fail) or, with `until_idle`, a
/// fetch that waited 5 s found nothing.
async fn work(client: reqwest::Client, base: String, seen: Arc<Mutex<Seen>>, until_idle: bool) {
    loop {
        let fetched = client
            .post(format!("{base}/api/v1/queues/crash/fetch"))
            .json(&json!({"max": 50, "lease": "2s", "wait": "5s", "worker": "w"}))
            .send()
            .await;
        let Ok(resp) = fetched else { return };
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        if jobs.is_empty() {
            if until_idle {
                return;
            }
            continue;
        }
        let batch: Vec<Value> = jobs
            .iter()
            .map(|j| json!({"id": j["id"], "token": j["token"]}))
            .collect();
        seen.lock()
            .unwrap()
            .deliveries
            .extend(jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()));
        let completed = client
            .post(format!("{base}/api/v1/jobs/complete"))
            .json(&json!({"jobs": batch}))
            .send()
            .await;
        let Ok(resp) = completed else { return };
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        let mut seen = seen.lock().unwrap();
        for result in body["results"].as_array().cloned().unwrap_or_default() {
            if result["ok"] == true {
                seen.acked.insert(result["id"].as_str().unwrap().to_owned());
            }
        }
    }
}

fn run_workers(
    client: &reqwest::Client,
    base: &str,
    seen: &Arc<Mutex<Seen>>,
    until_idle: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WORKERS)
        .map(|_| {
            tokio::spawn(work(
                client.clone(),
                base.to_owned(),
                seen.clone(),
                until_idle,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_jobs_survive_kill_9_and_every_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut keel, client) = start(dir.path()).await;
    for chunk in 0..2 {
        let jobs: Vec<Value> = (0..JOBS / 2)
            .map(|i| json!({"name": "crash", "payload": {"n": chunk * JOBS / 2 + i}}))
            .collect();
        let resp = client
            .post(format!("{}/api/v1/queues/crash/jobs", keel.base))
            .json(&json!({ "jobs": jobs }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }

    // Phase 1: work until about a third is acknowledged, then kill -9 keel mid-run.
    let before = Arc::new(Mutex::new(Seen::default()));
    let workers = run_workers(&client, &keel.base, &before, false);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if before.lock().unwrap().acked.len() >= JOBS / 3 {
            break;
        }
    }
    signal(&keel.child, "KILL");
    keel.child.wait().await.unwrap();
    for w in workers {
        w.await.unwrap();
    }

    // Phase 2: restart on the same data directory and finish.
    let (keel, client) = start(dir.path()).await;
    let after = Arc::new(Mutex::new(Seen::default()));
    let workers = run_workers(&client, &keel.base, &after, true);
    for w in workers {
        w.await.unwrap();
    }
    let counts: Value = client
        .get(format!("{}/api/v1/queues/crash", keel.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counts["counts"],
        json!({"completed": JOBS}),
        "every job completed, none lost"
    );

    let before = before.lock().unwrap();
    let after = after.lock().unwrap();
    // No acknowledged completion was lost: none of those jobs came back.
    let redelivered: HashSet<&String> = after.deliveries.iter().collect();
    assert!(
        before.acked.iter().all(|id| !redelivered.contains(id)),
        "a job acknowledged before the kill was delivered again"
    );
    // Jobs delivered twice are only among those in flight (delivered, not acknowledged) at the kill.
    let in_flight: HashSet<&String> = before
        .deliveries
        .iter()
        .filter(|id| !before.acked.contains(*id))
        .collect();
    let twice: HashSet<&String> = in_flight
        .iter()
        .copied()
        .filter(|id| redelivered.contains(id))
        .collect();
    // Each job was acknowledged exactly once — before the kill, after it, or (an in-flight job
    // whose completion was committed but whose answer the kill cut off) never, and then it was
    // not delivered again.
    assert!(before.acked.is_disjoint(&after.acked));
    assert_eq!(
        before.acked.len() + after.acked.len() + (in_flight.len() - twice.len()),
        JOBS
    );
    assert!(twice.iter().all(|id| after.acked.contains(*id)));
}
