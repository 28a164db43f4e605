use std::collections::HashMap;
use std::io::Write;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_with(
    file: Option<&Path>,
    env: &[(&str, &str)],
    overrides: Overrides,
) -> Result<Config, ConfigError> {
    let env = env_of(env);
    load(&ConfigSources {
        file,
        env: &env,
        overrides,
    })
}

#[test]
fn no_sources_gives_defaults() {
    let cfg = load_with(None, &[], Overrides::default()).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(cfg.server.data_dir, PathBuf::from("./keel-data"));
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let f = file_with(
        "[server]\nlisten = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\nbody_limit = \"2MiB\"\n",
    );
    let env = [
        ("KEEL_SERVER_LISTEN", "127.0.0.1:2222"),
        ("KEEL_SERVER_DATA_DIR", "/from/env"),
    ];
    let overrides = Overrides {
        listen: Some("127.0.0.1:3333".parse().unwrap()),
        ..Overrides::default()
    };
    let cfg = load_with(Some(f.path()), &env, overrides).unwrap();
    assert_eq!(cfg.server.listen.port(), 3333);
    assert_eq!(cfg.server.data_dir, PathBuf::from("/from/env"));
    assert_eq!(cfg.server.body_limit.bytes(), 2 << 20);
    assert_eq!(cfg.server.shutdown_grace.get().as_secs(), 10);
}

#[test]
fn env_values_are_typed_by_the_schema() {
    let env = [
        ("KEEL_SERVER_WORKER_THREADS", "2"),
        ("KEEL_AUTH_PUBLIC_METRICS", "false"),
        ("KEEL_HEALTH_MEMORY_WARN_PERCENT", "85.5"),
        ("KEEL_AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ("KEEL_LOG_FORMAT", "json"),
        ("KEEL_SYSTEM_SAMPLE_INTERVAL", ""),
    ];
    let cfg = load_with(None, &env, Overrides::default()).unwrap();
    assert_eq!(cfg.server.worker_threads, 2);
    assert!(!cfg.auth.public_metrics);
    assert_eq!(cfg.health.memory_warn_percent, 85.5);
    assert!(cfg.auth.jwt.enabled());
    assert_eq!(cfg.log.format, LogFormat::Json);

    let err = load_with(
        None,
        &[("KEEL_SERVER_WORKER_THREADS", "many")],
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable KEEL_SERVER_WORKER_THREADS: expected a whole number, got \"many\""
    );
}

#[test]
fn node_redis_variables_fill_the_redis_section() {
    let env = [
        ("REDIS_HOST", "cache.internal"),
        ("REDIS_PORT", "6380"),
        ("REDIS_PASSWORD", "pa55"),
        ("REDIS_DB", "2"),
        ("REDIS_KEY_PREFIX", "app:"),
    ];
    let cfg = load_with(None, &env, Overrides::default()).unwrap();
    assert_eq!(cfg.redis.host.as_deref(), Some("cache.internal"));
    assert_eq!(cfg.redis.port, 6380);
    assert_eq!(cfg.redis.db, 2);
    assert_eq!(cfg.redis.key_prefix, "app:");
    assert_eq!(
        cfg.redis.connection_url().unwrap().expose(),
        "redis://:pa55@cache.internal:6380/2"
    );

    let env = [
        ("REDIS_URL", "redis://a:6379"),
        ("KEEL_REDIS_URL", "redis://b:6379"),
    ];
    let cfg = load_with(None, &env, Overrides::default()).unwrap();
    assert_eq!(cfg.redis.url.unwrap().expose(), "redis://b:6379");
}

#[test]
fn errors_name_the_key_and_its_source() {
    let f = file_with("[server]\nlisen = \"127.0.0.1:1\"\n");
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("server.lisen: unknown key; expected one of"),
        "{err}"
    );

    let f = file_with("[sever]\n");
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("sever: unknown key"), "{err}");

    let f = file_with("[server]\nshutdown_grace = \"ten seconds\"\n");
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("server.shutdown_grace: invalid duration"),
        "{err}"
    );

    let f = file_with("[server]\nbody_limit = \"lots\"\n");
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("server.body_limit:"), "{err}");

    let f = file_with(
        "[[auth.tokens]]\nname = \"ci\"\ntoken = \"0123456789abcdef\"\nrole = \"root\"\n",
    );
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("auth.tokens[0].role: unknown variant `root`"),
        "{err}"
    );

    let err = load_with(
        None,
        &[("KEEL_SERVER_LISTEN", "localhost")],
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("server.listen: invalid socket address"),
        "{err}"
    );
    assert!(
        err.ends_with("(set by environment variable KEEL_SERVER_LISTEN)"),
        "{err}"
    );

    let err = load_with(
        None,
        &[("KEEL_SYSTEM_SAMPLE_INTERVAL", "10ms")],
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "system.sample_interval: must be at least 1s (set by environment variable KEEL_SYSTEM_SAMPLE_INTERVAL)"
    );

    let f = file_with("[server\n");
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not valid TOML") && err.contains("line 1"),
        "{err}"
    );

    let f = file_with("server = 5\n");
    let err = load_with(
        Some(f.path()),
        &[("KEEL_SERVER_LISTEN", "127.0.0.1:1")],
        Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "server: must be a table");

    let err = load_with(
        Some(Path::new("/nonexistent/keel.toml")),
        &[],
        Overrides::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot read config file /nonexistent/keel.toml"),
        "{err}"
    );
}

#[test]
fn secret_values_do_not_appear_in_errors_or_redacted_output() {
    let env = [("REDIS_URL", "ftp://user:hunter2@cache")];
    let err = load_with(None, &env, Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("redis.url:") && !err.contains("hunter2"),
        "{err}"
    );

    let env = [
        ("REDIS_URL", "redis://user:hunter2@cache"),
        (
            "KEEL_AUTH_JWT_SECRET",
            "0123456789abcdef0123456789abcdef-hunter2",
        ),
    ];
    let cfg = load_with(None, &env, Overrides::default()).unwrap();
    let shown = cfg.redacted_json().to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("redis://user:[redacted]@cache"), "{shown}");
}

#[test]
fn a_redis_job_store_needs_a_redis() {
    let f = file_with("[queue]\nbackend = \"redis\"\n");
    let err = load_with(Some(f.path()), &[], Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("queue.backend: \"redis\" needs a Redis: set redis.url"),
        "{err}"
    );
    let cfg = load_with(
        Some(f.path()),
        &[("REDIS_URL", "redis://127.0.0.1:6379")],
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(cfg.queue.backend, keel_queue::QueueBackend::Redis);
    let err = load_with(
        None,
        &[("KEEL_QUEUE_BACKEND", "postgres")],
        Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("queue.backend: unknown variant `postgres`"),
        "{err}"
    );
}
