//! The `keel` binary: commands, config errors, the banner and admin token, signals.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use keel_test::Sent;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod binary;

use binary::{KEEL, clean_env, exit_code, run, serve, signal};

#[tokio::test]
async fn no_arguments_prints_help_and_version_works() {
    let (code, out, err) = run(&[], &[]).await;
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("Usage: keel"), "{out}{err}");
    let (code, out, _) = run(&["--version"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("keel {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn default_config_is_valid_and_check_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (code, default, _) = run(&["config", "default"], &[]).await;
    assert_eq!(code, 0);
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, &default).unwrap();
    let (code, out, err) = run(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("is valid") && out.contains("listen = \"127.0.0.1:7070\""),
        "{out}"
    );

    let with_secret = format!(
        "{default}\n[[auth.tokens]]\nname = \"ci\"\ntoken = \"hunter2-hunter2-hunter2\"\nrole = \"admin\"\n"
    );
    std::fs::write(&path, with_secret).unwrap();
    let env = [("REDIS_URL", "redis://app:pw-in-env@cache:6379/1")];
    let (code, out, err) = run(&["config", "check", path.to_str().unwrap()], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("hunter2") && !out.contains("pw-in-env"),
        "{out}"
    );
    assert!(out.contains("redis://app:[redacted]@cache:6379/1"), "{out}");
}

#[tokio::test]
async fn bad_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nshutdown_grace = \"soon\"\n").unwrap();
    let p = path.to_str().unwrap();
    let (code, _, err) = run(&["config", "check", p], &[]).await;
    assert_eq!(code, 78);
    assert!(
        err.starts_with("keel: configuration error: server.shutdown_grace: invalid duration"),
        "{err}"
    );

    let (code, out, err) = run(&["serve", "--config", p], &[]).await;
    assert_eq!(code, 78);
    assert!(err.contains("server.shutdown_grace"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace") && out.is_empty(),
        "{err}"
    );

    let (code, _, err) = run(&["serve"], &[("KEEL_SERVER_WORKER_THREADS", "lots")]).await;
    assert_eq!(code, 78);
    assert!(err.contains("KEEL_SERVER_WORKER_THREADS"), "{err}");

    let (code, _, err) = run(&["serve", "--config", "/nonexistent/keel.toml"], &[]).await;
    assert_eq!(code, 78);
    assert!(
        err.contains("cannot read config file /nonexistent/keel.toml"),
        "{err}"
    );

    let (code, _, err) = run(&["serve", "--listen", "not-an-address"], &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--listen"), "{err}");
}

#[tokio::test]
async fn first_start_generates_an_admin_token_and_later_starts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = serve(dir.path(), &[], &[]).await;
    let token_path = dir.path().join("admin-token");
    let banner = keel.banner.join("\n");
    assert!(
        banner.contains(&format!("admin token: in {}", token_path.display())),
        "{banner}"
    );
    assert!(banner.contains("stop: Ctrl-C or SIGTERM"));
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        !banner.contains(&token),
        "the banner must not print the token"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let client = reqwest::Client::new();
    let stats = client
        .get(format!("{}/api/v1/stats", keel.base))
        .bearer_auth(&token)
        .sent()
        .await;
    assert_eq!(stats.status(), 200);
    let ready = client.get(format!("{}/ready", keel.base)).sent().await;
    assert_eq!(ready.status(), 200);
    signal(&keel.child, "TERM");
    assert_eq!(exit_code(&mut keel.child).await, 0);

    let mut again = serve(dir.path(), &[], &[]).await;
    let stats = client
        .get(format!("{}/api/v1/stats", again.base))
        .bearer_auth(&token)
        .sent()
        .await;
    assert_eq!(stats.status(), 200);
    assert_eq!(std::fs::read_to_string(&token_path).unwrap().trim(), token);
    signal(&again.child, "INT");
    assert_eq!(exit_code(&mut again.child).await, 0);
}

#[tokio::test]
async fn sigterm_turns_readiness_503_then_exits_zero_and_a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KEEL_SERVER_SHUTDOWN_DELAY", "4s")];
    let mut keel = serve(dir.path(), &[], &env).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{}/ready", keel.base))
            .sent()
            .await
            .status(),
        200
    );
    signal(&keel.child, "TERM");
    let mut saw_503 = false;
    for _ in 0..1000 {
        match client.get(format!("{}/ready", keel.base)).send().await {
            Ok(r) if r.status() == 503 => {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["status"], "shutting_down");
                saw_503 = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("listener closed before the shutdown delay ended: {e}"),
        }
    }
    assert!(saw_503, "/ready never answered 503 after SIGTERM");
    assert_eq!(exit_code(&mut keel.child).await, 0);

    let env = [("KEEL_SERVER_SHUTDOWN_DELAY", "60s")];
    let mut keel = serve(dir.path(), &[], &env).await;
    signal(&keel.child, "TERM");
    for _ in 0..1000 {
        if client
            .get(format!("{}/ready", keel.base))
            .sent()
            .await
            .status()
            == 503
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&keel.child, "TERM");
    assert_eq!(exit_code(&mut keel.child).await, 130);
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(KEEL);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--data-dir",
    ])
    .arg(dir.path());
    clean_env(&mut cmd);
    cmd.env("KEEL_LOG", "keel_admin=debug,info");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = out.next_line().await.unwrap().unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    reqwest::Client::new()
        .get(format!("{base}/nope"))
        .header("x-request-id", "trace-me-123")
        .sent()
        .await;
    signal(&child, "TERM");
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut found = false;
    while let Some(line) = err.next_line().await.unwrap() {
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        if v["span"]["request_id"] == "trace-me-123" {
            found = true;
        }
    }
    assert!(found, "no log line carried the request id");
    assert_eq!(exit_code(&mut child).await, 0);
}

#[tokio::test]
async fn configuration_doc_embeds_the_current_reference() {
    let (code, reference, _) = run(&["config", "reference"], &[]).await;
    assert_eq!(code, 0);
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    assert!(
        doc.contains(&reference),
        "docs/configuration.md is out of date: regenerate its reference section with `cargo run -q -- config reference`"
    );
}

#[tokio::test]
async fn the_banner_names_the_shared_redis_without_its_password() {
    let redis = keel_test::RedisServer::start();
    let url = redis.url().replace("redis://", "redis://default:hunter2@");
    let dir = tempfile::tempdir().unwrap();
    let mut keel = serve(dir.path(), &[], &[("REDIS_URL", url.as_str())]).await;
    let banner = keel.banner.join("\n");
    let shown = format!("redis://default:[redacted]@{}/0", redis.addr());
    assert!(
        banner.contains(&format!("shared through Redis at {shown}")),
        "{banner}"
    );
    assert!(!banner.contains("hunter2"), "{banner}");
    signal(&keel.child, "TERM");
    assert_eq!(exit_code(&mut keel.child).await, 0);
}
