//! keel-redis against real `redis-server` processes started per test (so tests can kill,
//! restart and pause them). Two `Redis` handles on one server stand for two keel instances.

use std::time::Duration;

use keel_core::{Clock, Secret};
use keel_redis::{
    FailureMode, LockError, Locks, Redis, RedisError, RedisOptions, SentinelOptions, SharedLimits,
};
use keel_resilience::{BreakerState, Quota};
use keel_test::{RedisSentinel, RedisServer};

fn options(server: &RedisServer) -> RedisOptions {
    let mut options = RedisOptions::new(Secret::new(server.url()));
    options.key_prefix = "test:".to_owned();
    options
}

fn handle(server: &RedisServer) -> Redis {
    Redis::connect(&options(server), Clock::system()).unwrap()
}

#[tokio::test]
async fn locks_are_shared_fenced_and_owned_by_their_token() {
    let server = RedisServer::start();
    let (a, b) = (
        Locks::in_redis(handle(&server)),
        Locks::in_redis(handle(&server)),
    );
    let ttl = Duration::from_secs(30);

    let first = a.acquire("report", ttl, Duration::ZERO).await.unwrap();
    match b.acquire("report", ttl, Duration::ZERO).await {
        Err(LockError::Held { expires_in, .. }) => {
            assert!(
                expires_in > Duration::from_secs(25) && expires_in <= ttl,
                "{expires_in:?}"
            )
        }
        other => panic!("B must not get a held lock: {other:?}"),
    }
    assert!(matches!(
        b.release("report", "not-the-token").await,
        Err(LockError::NotHolder(_))
    ));
    assert!(matches!(
        b.extend("report", "not-the-token", ttl).await,
        Err(LockError::NotHolder(_))
    ));

    // The lease is in Redis with its TTL, and extending sets a new one.
    let raw = handle(&server);
    let pttl: i64 = raw
        .query(redis::cmd("PTTL").arg("test:lock:{report}"))
        .await
        .unwrap();
    assert!(pttl > 25_000 && pttl <= 30_000, "{pttl}");
    a.extend("report", &first.token, Duration::from_secs(120))
        .await
        .unwrap();
    let pttl: i64 = raw
        .query(redis::cmd("PTTL").arg("test:lock:{report}"))
        .await
        .unwrap();
    assert!(pttl > 115_000, "{pttl}");
    // The fencing counter outlives the lease, but not forever.
    let fencing_ttl: i64 = raw
        .query(redis::cmd("PTTL").arg("test:lock:{report}:fencing"))
        .await
        .unwrap();
    assert!(fencing_ttl > 29 * 24 * 3600 * 1000, "{fencing_ttl}");

    // B waits; A releases; B gets it with a higher fencing number.
    let waiting = tokio::spawn(async move {
        b.acquire("report", ttl, Duration::from_secs(10))
            .await
            .map(|lease| lease.fencing)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.release("report", &first.token).await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert_eq!((first.fencing, second), (1, 2));
    assert!(matches!(
        a.release("report", &first.token).await,
        Err(LockError::NotHolder(_))
    ));
}

#[tokio::test]
async fn two_instances_sharing_a_limit_admit_at_most_its_burst_in_total() {
    let server = RedisServer::start();
    let quota = Quota {
        max: 10,
        per: Duration::from_secs(3600),
        burst: 10,
    };
    let instances: Vec<SharedLimits> = (0..2)
        .map(|_| SharedLimits::new(handle(&server), FailureMode::Open, Clock::system()))
        .collect();
    let limiters: Vec<_> = instances
        .iter()
        .map(|l| std::sync::Arc::new(l.limiter("api", quota)))
        .collect();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let limiter = limiters[i % 2].clone();
            tokio::spawn(async move { limiter.check("client-1", 1).await.allowed })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 10);

    // Both instances now refuse locally, without asking Redis.
    let asked: u64 = instances.iter().map(|l| l.stats().decisions).sum();
    for limiter in &limiters {
        let refused = limiter.check("client-1", 1).await;
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert!(
            refused.retry_after > Duration::from_secs(300),
            "{refused:?}"
        );
    }
    let asked_after: u64 = instances.iter().map(|l| l.stats().decisions).sum();
    assert_eq!(asked_after, asked, "known refusals are answered locally");
    assert!(instances.iter().all(|l| l.stats().local_refusals >= 1));

    // Another key has its own budget, and a cost above what is left is refused.
    let other = limiters[0].check("client-2", 7).await;
    assert_eq!((other.allowed, other.remaining), (true, 3));
    assert!(!limiters[1].check("client-2", 4).await.allowed);
    assert!(limiters[1].check("client-2", 3).await.allowed);
}

#[tokio::test]
async fn without_redis_limits_fail_open_or_closed_as_configured() {
    let mut server = RedisServer::start();
    let quota = Quota {
        max: 5,
        per: Duration::from_secs(1),
        burst: 5,
    };
    let open = SharedLimits::new(handle(&server), FailureMode::Open, Clock::system());
    let closed = SharedLimits::new(handle(&server), FailureMode::Closed, Clock::system());
    let (open_l, closed_l) = (open.limiter("x", quota), closed.limiter("x", quota));
    assert!(open_l.check("k", 1).await.allowed);
    server.kill();
    for _ in 0..3 {
        assert!(open_l.check("k", 1).await.allowed);
        let refused = closed_l.check("k", 1).await;
        assert!(!refused.allowed && refused.retry_after > Duration::ZERO);
    }
    assert_eq!(open.stats().fail_open, 3);
    assert_eq!(closed.stats().fail_closed, 3);
}

#[tokio::test]
async fn the_connection_comes_back_after_a_restart_and_the_breaker_guards_a_dead_redis() {
    let mut server = RedisServer::start();
    let mut opts = options(&server);
    opts.breaker_failures = 3;
    opts.breaker_cool_down = Duration::from_secs(30);
    let (clock, time) = Clock::mock();
    let redis = Redis::connect(&opts, clock).unwrap();
    redis.ping().await.unwrap();

    server.kill();
    for _ in 0..3 {
        let e = redis.ping().await.unwrap_err();
        assert!(e.is_outage(), "{e}");
    }
    assert_eq!(redis.stats().breaker, BreakerState::Open);
    assert!(matches!(
        redis.ping().await,
        Err(RedisError::Unavailable(_))
    ));
    assert_eq!(redis.stats().refused, 1);

    server.restart();
    time.advance(Duration::from_secs(30));
    // The first trial may still find the old, broken connection; the reconnect follows.
    let mut answered = false;
    for _ in 0..50 {
        if redis.ping().await.is_ok() {
            answered = true;
            break;
        }
        time.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "Redis answers again: {:?}", redis.stats());
    let stats = redis.stats();
    assert_eq!(stats.breaker, BreakerState::Closed);
    assert_eq!(stats.reconnects, 1);
    assert!(stats.errors >= 3);
}

#[tokio::test]
async fn a_stalled_redis_times_out_within_the_command_timeout() {
    let server = RedisServer::start();
    let mut opts = options(&server);
    opts.command_timeout = Duration::from_millis(200);
    let redis = Redis::connect(&opts, Clock::system()).unwrap();
    redis.ping().await.unwrap();
    server.pause();
    let e = redis.ping().await.unwrap_err();
    server.resume();
    assert!(matches!(e, RedisError::Timeout(_)), "{e}");
    assert_eq!(redis.stats().timeouts, 1);
}

#[tokio::test]
async fn errors_never_show_the_password() {
    let redis = Redis::connect(
        &RedisOptions::new(Secret::new("redis://user:hunter2@127.0.0.1:1/0")),
        Clock::system(),
    )
    .unwrap();
    let e = redis.ping().await.unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(!format!("{redis:?}").contains("hunter2"));
    let bad = Redis::connect(
        &RedisOptions::new(Secret::new("http://user:hunter2@host")),
        Clock::system(),
    )
    .unwrap_err();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
}

#[tokio::test]
async fn rediss_urls_speak_tls_with_a_private_ca_and_client_certificates() {
    let server = RedisServer::start_tls(true);
    let tls = server.tls().unwrap();
    let mut opts = RedisOptions::new(Secret::new(server.url()));
    assert!(server.url().starts_with("rediss://"));
    opts.tls = keel_redis::TlsFiles {
        ca_file: Some(tls.path("ca.crt")),
        cert_file: Some(tls.path("client.crt")),
        key_file: Some(tls.path("client.key")),
    };
    let redis = Redis::connect(&opts, Clock::system()).unwrap();
    redis.ping().await.unwrap();
    let locks = Locks::in_redis(redis);
    let lease = locks
        .acquire("over-tls", Duration::from_secs(5), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(lease.fencing, 1);

    // Without the client certificate the server refuses the handshake; without the private CA
    // keel refuses the server's certificate.
    opts.tls.cert_file = None;
    opts.tls.key_file = None;
    let e = Redis::connect(&opts, Clock::system())
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(e.is_outage(), "{e}");
    let mut untrusted = RedisOptions::new(Secret::new(server.url()));
    untrusted.tls.cert_file = Some(tls.path("client.crt"));
    untrusted.tls.key_file = Some(tls.path("client.key"));
    let e = Redis::connect(&untrusted, Clock::system())
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(e.is_outage(), "{e}");

    // Files that cannot be read are named.
    let mut missing = RedisOptions::new(Secret::new(server.url()));
    missing.tls.ca_file = Some("/nonexistent/ca.crt".into());
    let e = Redis::connect(&missing, Clock::system()).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
}

/// Polls `check` every 100 ms for up to `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..secs * 10 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited {secs} s in vain: {what}");
}

#[tokio::test]
async fn a_sentinel_failover_is_followed_to_the_new_master() {
    let master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let plain = |url: String| {
        Redis::connect(&RedisOptions::new(Secret::new(url)), Clock::system()).unwrap()
    };
    let (to_master, to_replica) = (plain(master.url()), plain(replica.url()));
    eventually(10, "the replica is connected", || async {
        let info: String = to_master
            .query(redis::cmd("INFO").arg("replication"))
            .await
            .unwrap_or_default();
        info.contains("connected_slaves:1")
    })
    .await;
    let sentinel = RedisSentinel::start(&master);
    let to_sentinel = plain(format!("redis://{}", sentinel.address()));

    let mut opts = RedisOptions::new(Secret::new("redis://sentinel-master/0"));
    opts.sentinel = Some(SentinelOptions {
        addresses: vec!["127.0.0.1:1".into(), sentinel.address()],
        master: RedisSentinel::MASTER.into(),
    });
    let redis = Redis::connect(&opts, Clock::system()).unwrap();
    let _: () = redis
        .query(redis::cmd("SET").arg("k").arg("before"))
        .await
        .unwrap();
    eventually(
        10,
        "the write reached the replica and the Sentinel knows the replica",
        || async {
            let copied: Option<String> = to_replica
                .query(redis::cmd("GET").arg("k"))
                .await
                .unwrap_or(None);
            let replicas: Vec<redis::Value> = to_sentinel
                .query(
                    redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(RedisSentinel::MASTER),
                )
                .await
                .unwrap_or_default();
            copied.as_deref() == Some("before") && !replicas.is_empty()
        },
    )
    .await;

    // The Sentinel accepts a failover once it has heard from the replica itself.
    eventually(20, "the Sentinel starts a failover", || async {
        to_sentinel
            .query::<()>(
                redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(RedisSentinel::MASTER),
            )
            .await
            .is_ok()
    })
    .await;
    // The failover runs in the background: wait until the replica leads and the old master
    // follows it (it then answers writes with READONLY).
    let role = |handle: &Redis| {
        let handle = handle.clone();
        async move {
            let role: Vec<redis::Value> =
                handle.query(&redis::cmd("ROLE")).await.unwrap_or_default();
            match role.first() {
                Some(redis::Value::BulkString(r)) => String::from_utf8_lossy(r).into_owned(),
                _ => String::new(),
            }
        }
    };
    eventually(
        20,
        "the replica is promoted and the old master demoted",
        || async { role(&to_replica).await == "master" && role(&to_master).await == "slave" },
    )
    .await;
    // keel's writes fail for a moment (READONLY from the demoted master), then go to the new
    // master.
    eventually(20, "writes reach the new master", || async {
        redis
            .query::<()>(redis::cmd("SET").arg("k").arg("after"))
            .await
            .is_ok()
    })
    .await;
    let now: Option<String> = to_replica.query(redis::cmd("GET").arg("k")).await.unwrap();
    assert_eq!(now.as_deref(), Some("after"));
}

#[tokio::test]
async fn a_half_open_trial_given_up_midway_does_not_leave_the_breaker_stuck() {
    let server = RedisServer::start();
    let mut opts = options(&server);
    opts.breaker_failures = 1;
    opts.breaker_cool_down = Duration::from_secs(30);
    opts.command_timeout = Duration::from_millis(300);
    let (clock, time) = Clock::mock();
    let redis = Redis::connect(&opts, clock).unwrap();
    redis.ping().await.unwrap();
    server.pause();
    assert!(redis.ping().await.is_err());
    assert_eq!(redis.stats().breaker, BreakerState::Open);

    // Half-open: the one trial is abandoned by its caller before Redis answers.
    time.advance(Duration::from_secs(30));
    let abandoned = tokio::time::timeout(Duration::from_millis(20), redis.ping()).await;
    assert!(abandoned.is_err(), "the trial was still waiting");
    server.resume();

    // It counted as a failed trial: after another cool-down a new trial goes through.
    time.advance(Duration::from_secs(30));
    redis
        .ping()
        .await
        .expect("a new trial is let through and succeeds");
    assert_eq!(redis.stats().breaker, BreakerState::Closed);
}
