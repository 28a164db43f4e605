//! Records the source commit as `KEEL_BUILD_COMMIT` (reported by `/metrics` and
//! `/api/v1/system/info`), unless the builder already set it. Outside a git checkout it stays
//! unset and the build reports `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KEEL_BUILD_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    if std::env::var_os("KEEL_BUILD_COMMIT").is_some() {
        return;
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_hexdigit()));
    if let Some(commit) = commit {
        println!("cargo:rustc-env=KEEL_BUILD_COMMIT={commit}");
    }
}
