//! `keel serve --upstream`: the gateway on its own listener in front of a real app, and
//! `keel config check` naming a bad route rule.

mod binary;

use axum::Router;
use axum::routing::get;
use binary::{exit_code, run, serve, signal};
use keel_test::Sent;

async fn start_app() -> String {
    let app = Router::new().route("/hello", get(|| async { "hello from the app" }));
    keel_test::serve_app(app).await
}

#[tokio::test]
async fn serve_with_an_upstream_runs_the_gateway_beside_the_api() {
    let upstream = start_app().await;
    let dir = tempfile::tempdir().unwrap();
    let mut keel = serve(
        dir.path(),
        &["--upstream", &upstream, "--gateway-listen", "127.0.0.1:0"],
        &[],
    )
    .await;
    let line = keel
        .banner
        .iter()
        .find(|l| l.starts_with("gateway on "))
        .expect("the banner names the gateway")
        .clone();
    assert!(line.ends_with(&format!("in front of {upstream}")), "{line}");
    let gateway = line.split_whitespace().nth(2).unwrap().to_owned();
    let client = reqwest::Client::new();
    let through = client.get(format!("{gateway}/hello")).sent().await;
    assert_eq!(through.status(), 200);
    assert!(through.headers().contains_key("x-request-id"));
    assert_eq!(through.text().await.unwrap(), "hello from the app");
    // The API stays on its own listener.
    let ready = client.get(format!("{}/ready", keel.base)).sent().await;
    assert_eq!(ready.status(), 200);
    signal(&keel.child, "TERM");
    assert_eq!(exit_code(&mut keel.child).await, 0);
}

#[tokio::test]
async fn config_check_names_the_bad_route_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        r#"
[gateway]
upstream = "http://127.0.0.1:3000"

[[gateway.routes]]
prefix = "/api/"

[[gateway.routes]]
regex = "^/v[0-9+/"
"#,
    )
    .unwrap();
    let (code, _, err) = run(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(code, 78);
    assert!(
        err.starts_with("keel: configuration error: gateway.routes[1].regex: not a valid regex"),
        "{err}"
    );

    std::fs::write(
        &path,
        "[gateway]\nupstream = \"http://127.0.0.1:3000\"\n[[gateway.routes]]\nprefix = \"/a\"\nmax_bdy = \"1MiB\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(code, 78);
    assert!(
        err.contains("gateway.routes[0]: max_bdy: unknown key"),
        "{err}"
    );

    let (code, _, err) = run(&["serve", "--upstream", "https://app.example"], &[]).await;
    assert_eq!(code, 78);
    assert!(
        err.contains("gateway.upstream: the scheme must be http"),
        "{err}"
    );
}

#[tokio::test]
async fn the_complete_example_in_the_gateway_docs_is_valid() {
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/gateway.md");
    let doc = std::fs::read_to_string(doc_path).unwrap();
    let section = doc
        .split("## A complete example")
        .nth(1)
        .expect("docs/gateway.md has a complete example");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml block");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keel.toml");
    std::fs::write(&path, example).unwrap();
    let (code, out, err) = run(&["config", "check", path.to_str().unwrap()], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("habit-writes"), "{out}");
    assert!(
        !out.contains("replace-with-the-app"),
        "the JWT secret is redacted: {out}"
    );
}
