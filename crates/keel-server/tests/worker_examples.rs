//! The worker examples of docs/queues.md (`examples/workers/`), run against a real keel with
//! the machine's `node` and `python3`: each works a queue's jobs to completion.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keel_auth::Role;
use keel_test::{Sent, TestServer, WORKER_TOKEN};
use reqwest::Method;
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workers")
        .join(name)
}

async fn works_the_queue(program: &str, script: &str) {
    let s = TestServer::start().await;
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"name": format!("{program}-{i}"), "payload": {"n": i}}))
        .collect();
    s.request(Method::POST, "/api/v1/queues/mail/jobs", Role::Worker)
        .json(&json!({"jobs": jobs}))
        .sent()
        .await;
    let mut worker = tokio::process::Command::new(program)
        .arg(example(script))
        .arg("mail")
        .env("KEEL_URL", s.url(""))
        .env("KEEL_TOKEN", WORKER_TOKEN)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info: Value = s
            .get("/api/v1/queues/mail")
            .sent()
            .await
            .json()
            .await
            .unwrap();
        if info["counts"] == json!({"completed": 5}) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{program} did not finish the jobs: {info}"
        );
        if let Ok(Some(status)) = worker.try_wait() {
            panic!("{program} exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill().await.unwrap();
    let page: Value = s
        .get("/api/v1/queues/mail/jobs")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    for job in page["jobs"].as_array().unwrap() {
        assert_eq!(job["result"], json!({"handled": true}), "{job}");
    }
}

#[tokio::test]
async fn the_node_worker_example_works_a_queue() {
    works_the_queue("node", "worker.mjs").await;
}

#[tokio::test]
async fn the_python_worker_example_works_a_queue() {
    works_the_queue("python3", "worker.py").await;
}
