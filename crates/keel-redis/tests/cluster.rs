//! Everything keel keeps in Redis, on a real Redis Cluster of three masters the harness starts:
//! the job queue's conformance suite, queues spread over the nodes, the two-tier cache (tags,
//! patterns and listings over every node), locks and shared rate limits.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, Glob, SetOptions};
use keel_core::{Clock, Secret};
use keel_queue::conformance;
use keel_queue::{JobState, NewJob, Store};
use keel_redis::{FailureMode, Locks, Redis, RedisOptions, RedisStore, SharedLimits, TieredCache};
use keel_resilience::Quota;
use keel_test::RedisCluster;

mod support;
use serde_json::json;
use support::{received, subscribed};

fn redis(cluster: &RedisCluster, prefix: &str) -> Redis {
    let mut options = RedisOptions::new(Secret::new(cluster.url()));
    options.cluster = cluster.addresses();
    options.key_prefix = prefix.to_owned();
    // Generous: the suite's bulk adds on a loaded CI machine.
    options.command_timeout = Duration::from_secs(5);
    let redis = Redis::connect(&options, Clock::system()).unwrap();
    assert!(redis.is_cluster());
    redis
}

/// Which master serves `key`'s slot, as `host:port`.
fn node_of(cluster: &RedisCluster, key: &str) -> String {
    let first = cluster.addresses()[0].clone();
    let port = first.rsplit_once(':').unwrap().1;
    let slot: u16 = cli(port, &["cluster", "keyslot", key])
        .trim()
        .parse()
        .unwrap();
    cli(port, &["cluster", "nodes"])
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields
                .iter()
                .skip(8)
                .filter(|r| !r.starts_with('['))
                .any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    (lo.parse::<u16>().unwrap()..=hi.parse::<u16>().unwrap()).contains(&slot)
                });
            owns.then(|| fields[1].split('@').next().unwrap().to_owned())
        })
        .expect("some master serves every slot")
}

fn cli(port: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_job_store_passes_the_conformance_suite_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    conformance::run_all(|case, clock| {
        RedisStore::new(redis(&cluster, &format!("case{case}:")), clock)
    })
    .await;
}

#[tokio::test]
async fn queues_on_every_node_are_worked_together_and_survive_a_script_flush() {
    let cluster = RedisCluster::start(3);
    let a = RedisStore::new(redis(&cluster, "keel:"), Clock::system());
    let b = RedisStore::new(redis(&cluster, "keel:"), Clock::system());
    // Enough queues that every master holds some (and the global set of queues another).
    let queues: Vec<String> = (0..12).map(|i| format!("queue-{i}")).collect();
    let nodes: BTreeSet<String> = queues
        .iter()
        .map(|q| node_of(&cluster, &format!("keel:q:{{{q}}}:m")))
        .collect();
    assert_eq!(nodes.len(), 3, "the queues should span the masters");
    for q in &queues {
        let jobs = (0..5)
            .map(|i| NewJob::new("j", json!({ "i": i })))
            .collect();
        a.add(q, jobs).await.unwrap();
    }
    let overview = b.overview().await.unwrap();
    assert_eq!(overview.len(), queues.len(), "{overview:?}");

    // Scripts gone from every node (as after restarts): the next calls load them again.
    for address in cluster.addresses() {
        let port = address.rsplit_once(':').unwrap().1;
        assert_eq!(cli(port, &["script", "flush"]).trim(), "OK");
    }
    let lease = Duration::from_secs(30);
    let mut fetched = Vec::new();
    for q in &queues {
        fetched.extend(b.fetch(q, "b", 10, lease).await.unwrap());
    }
    assert_eq!(fetched.len(), 60);
    // One call completing jobs of all twelve queues: one pipeline split over the masters.
    let outcomes = a
        .complete_many(
            fetched
                .iter()
                .map(|f| (f.job.id.clone(), f.token.clone(), json!("done")))
                .collect(),
        )
        .await
        .unwrap();
    assert!(
        outcomes
            .into_iter()
            .all(|o| o.unwrap().state == JobState::Completed)
    );
    for q in &queues {
        assert_eq!(b.counts(q).await.unwrap().get("completed"), Some(&5), "{q}");
    }
}

fn tiered(cluster: &RedisCluster) -> TieredCache {
    TieredCache::start(
        Cache::new(CacheConfig::default()),
        redis(cluster, "t:"),
        Clock::system(),
    )
}

fn tagged(tags: &[&str]) -> SetOptions {
    SetOptions {
        ttl: Some(Duration::from_secs(600)),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..SetOptions::default()
    }
}

#[tokio::test]
async fn the_cache_keeps_entries_tags_and_listings_across_the_nodes() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (tiered(&cluster), tiered(&cluster));
    subscribed(&a).await;
    subscribed(&b).await;
    for i in 0..300 {
        let tags: &[&str] = if i % 2 == 0 {
            &["even", "all"]
        } else {
            &["all"]
        };
        a.set(
            &format!("user:{i}"),
            Bytes::from(format!("v{i}")),
            tagged(tags),
        )
        .await
        .unwrap();
    }
    for i in 0..20 {
        a.set(&format!("order:{i}"), Bytes::from("o"), tagged(&[]))
            .await
            .unwrap();
    }
    let nodes: BTreeSet<String> = (0..300)
        .map(|i| node_of(&cluster, &format!("t:cache:v:{{{:02x}}}", i % 256)))
        .collect();
    assert_eq!(nodes.len(), 3, "the entries should span the masters");
    assert_eq!(b.get("user:7").await.unwrap().bytes, "v7");

    // A listing pages through every node: each key at least once, nothing else.
    let mut listed = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = b.scan(&Glob::new("user:*"), cursor.as_deref(), 37).await;
        listed.extend(page.keys.iter().map(|k| k.key.to_string()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: BTreeSet<String> = (0..300).map(|i| format!("user:{i}")).collect();
    assert_eq!(listed, expected);

    // A tag reaches its entries in every group, on every node, and only those.
    assert_eq!(b.invalidate_tag("even").await, 150);
    received(&a, 1).await;
    assert!(a.get("user:8").await.is_none());
    assert!(b.get("user:8").await.is_none());
    assert_eq!(a.get("user:9").await.unwrap().bytes, "v9");
    // Rewriting an entry drops its old tags: it is not invalidated with them.
    a.set("user:9", Bytes::from("new"), tagged(&["fresh"]))
        .await
        .unwrap();
    assert_eq!(b.invalidate_tag("all").await, 149);
    received(&a, 2).await;
    assert_eq!(b.get("user:9").await.unwrap().bytes, "new");

    // A pattern delete scans every node.
    assert_eq!(a.delete_matching(&Glob::new("order:*")).await, 20);
    assert!(b.get("order:3").await.is_none());
    assert!(b.delete("user:9").await);
    received(&a, 3).await;
    assert!(a.get("user:9").await.is_none());
    let empty = b.scan(&Glob::new("*"), None, 1000).await;
    assert!(empty.keys.is_empty(), "{:?}", empty.keys);
    // Each publishes its own statistics when asked; the sum spans both.
    a.cluster_stats().await.unwrap();
    let stats = b.cluster_stats().await.unwrap();
    assert_eq!(stats.instances, 2);
}

#[tokio::test]
async fn locks_and_shared_limits_work_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let locks = Locks::in_redis(redis(&cluster, "keel:"));
    let lease = locks
        .acquire("report", Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    assert!(
        locks
            .acquire("report", Duration::from_secs(30), Duration::ZERO)
            .await
            .is_err()
    );
    locks
        .extend("report", &lease.token, Duration::from_secs(60))
        .await
        .unwrap();
    locks.release("report", &lease.token).await.unwrap();
    let again = locks
        .acquire("report", Duration::from_secs(30), Duration::ZERO)
        .await
        .unwrap();
    assert!(again.fencing > lease.fencing);

    let quota = Quota {
        max: 5,
        per: Duration::from_secs(3600),
        burst: 5,
    };
    let limits = SharedLimits::new(
        redis(&cluster, "keel:"),
        FailureMode::Closed,
        Clock::system(),
    );
    let limiter = limits.limiter("api", quota);
    for key in ["a", "b", "c"] {
        let admitted = admitted(&limiter, key).await;
        assert_eq!(admitted, 5, "{key}");
    }
}

async fn admitted(limiter: &keel_redis::SharedRateLimiter, key: &str) -> usize {
    let mut admitted = 0;
    for _ in 0..8 {
        admitted += usize::from(limiter.check(key, 1).await.allowed);
    }
    admitted
}

#[tokio::test]
async fn a_restarted_master_is_used_again_without_a_restart_of_keel() {
    let mut cluster = RedisCluster::start(3);
    let redis = redis(&cluster, "keel:");
    let locks = Locks::in_redis(redis.clone());
    // A lock name whose keys live on the first master, which is restarted (empty).
    let first = cluster.addresses()[0].clone();
    let name = (0..)
        .map(|i| format!("job-{i}"))
        .find(|n| node_of(&cluster, &format!("keel:lock:{{{n}}}")) == first)
        .unwrap();
    locks
        .acquire(&name, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    cluster.restart(0);
    // Its lock went with its data; keel reaches the node again by itself.
    let mut taken = false;
    // Bounded generously: reconnecting waits out the breaker's cool-down after the outage.
    for _ in 0..300 {
        if locks
            .acquire(&name, Duration::from_secs(60), Duration::ZERO)
            .await
            .is_ok()
        {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        taken,
        "the restarted master answers again: {:?}",
        redis.stats()
    );
    redis.ping().await.unwrap();
}

#[tokio::test]
async fn a_cluster_asking_for_a_password_gets_it_from_the_url() {
    let cluster = RedisCluster::start(3);
    cluster.require_password("s3cret-pw");
    let connect = |url: String| {
        let mut options = RedisOptions::new(Secret::new(url));
        options.cluster = cluster.addresses();
        options.command_timeout = Duration::from_secs(5);
        Redis::connect(&options, Clock::system()).unwrap()
    };
    let first = &cluster.addresses()[0];
    let redis = connect(format!("redis://:s3cret-pw@{first}"));
    let store = RedisStore::new(redis, Clock::system());
    for q in ["a", "b", "c", "d"] {
        store
            .add(q, vec![NewJob::new("j", json!(1))])
            .await
            .unwrap();
        let leased = store
            .fetch(q, "w", 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(leased.len(), 1, "{q}");
    }
    // A wrong password fails, and the error does not repeat it.
    let wrong = connect(format!("redis://:not-the-pw@{first}"));
    let e = wrong.ping().await.unwrap_err();
    assert!(!e.to_string().contains("not-the-pw"), "{e}");
}
