//! Running the real `keel` binary in tests: commands to completion, `keel serve` children with
//! the address from their banner, signals.

#![allow(dead_code)] // each test file uses part of it

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// Runs `keel args…` to completion with a clean KEEL_/REDIS_ environment.
pub(crate) async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(KEEL);
    cmd.args(args);
    clean_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("keel finished")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("KEEL_") || key.starts_with("REDIS_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
}

/// A `keel serve` child with the address it printed in its banner.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) banner: Vec<String>,
}

pub(crate) async fn serve(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut cmd = Command::new(KEEL);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(extra_args);
    clean_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push(line.clone());
            if line.starts_with("stop:") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("banner printed");
    let first = banner.first().expect("a banner line").clone();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in banner")
        .to_owned();
    Served {
        child,
        base,
        banner,
    }
}

pub(crate) fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

pub(crate) async fn exit_code(child: &mut Child) -> i32 {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("keel exited")
        .unwrap();
    status.code().unwrap_or(-1)
}

/// A client that sends the admin token `keel serve` generated in `data_dir`.
pub(crate) fn admin_client(data_dir: &Path) -> reqwest::Client {
    let token = std::fs::read_to_string(data_dir.join("admin-token")).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token.trim()).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}
