//! The two-tier cache against a real `redis-server`: two `TieredCache`s with their own memory
//! tiers on one Redis stand for two keel instances.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, Glob, SetOptions, SetOutcome};
use keel_core::{Clock, Secret};
use keel_redis::{Redis, RedisOptions, TieredCache};
use keel_test::RedisServer;

mod support;
use support::{received, subscribed};

fn instance(server: &RedisServer) -> TieredCache {
    let mut options = RedisOptions::new(Secret::new(server.url()));
    options.key_prefix = "t:".to_owned();
    let redis = Redis::connect(&options, Clock::system()).unwrap();
    TieredCache::start(Cache::new(CacheConfig::default()), redis, Clock::system())
}

fn opts(ttl_secs: u64, tags: &[&str]) -> SetOptions {
    SetOptions {
        ttl: Some(Duration::from_secs(ttl_secs)),
        content_type: Some("application/json".to_owned()),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        uncompressed: false,
    }
}

#[tokio::test]
async fn values_written_on_one_instance_are_read_on_another_and_invalidated_everywhere() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server), instance(&server));
    subscribed(&a).await;
    subscribed(&b).await;

    let outcome = a
        .set("user:1", Bytes::from("v1"), opts(600, &["users"]))
        .await;
    assert_eq!(outcome.unwrap(), SetOutcome::Created);
    // B hears of the write first: an L2 read overtaken by an invalidation is not kept in
    // memory, and the checks below count memory hits.
    received(&b, 1).await;
    let read = b.get("user:1").await.expect("B reads A's write from Redis");
    assert_eq!(read.bytes, "v1");
    assert_eq!(read.content_type(), Some("application/json"));
    assert!(
        read.ttl_remaining().unwrap() <= Duration::from_secs(60),
        "L1 keeps it 60s at most"
    );
    assert_eq!(b.stats().l2.hits, 1);
    b.get("user:1").await.unwrap();
    assert_eq!(b.stats().l1.hits, 1, "the second read is a memory hit");

    // A rewrite on A: B drops its copy once told, and reads the new value.
    assert_eq!(
        a.set("user:1", Bytes::from("v2"), opts(600, &["users"]))
            .await
            .unwrap(),
        SetOutcome::Replaced
    );
    received(&b, 2).await;
    assert_eq!(b.get("user:1").await.unwrap().bytes, "v2");

    // A delete on A: B stops serving it within cache.l1_staleness of the delete returning.
    let deleted_at = Instant::now();
    assert!(a.delete("user:1").await);
    let mut served_old = 0;
    while b.get("user:1").await.is_some() {
        served_old += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stale_for = deleted_at.elapsed();
    assert!(
        stale_for <= Duration::from_millis(100),
        "B served the deleted value for {stale_for:?} ({served_old} reads)"
    );

    // Tags and patterns, written on B and invalidated on A.
    for i in 0..5 {
        b.set(
            &format!("team:{i}"),
            Bytes::from("t"),
            opts(600, &["teams"]),
        )
        .await
        .unwrap();
        b.set(&format!("post:{i}"), Bytes::from("p"), opts(600, &[]))
            .await
            .unwrap();
    }
    for i in 0..5 {
        b.get(&format!("team:{i}")).await.unwrap();
        b.get(&format!("post:{i}")).await.unwrap();
    }
    // Three broadcasts from A so far (write, rewrite, delete); these are the fourth and fifth.
    assert_eq!(a.invalidate_tag("teams").await, 5);
    assert_eq!(a.delete_matching(&Glob::new("post:*")).await, 5);
    received(&b, 5).await;
    for i in 0..5 {
        assert!(b.get(&format!("team:{i}")).await.is_none());
        assert!(b.get(&format!("post:{i}")).await.is_none());
    }

    // Listing pages through Redis.
    for i in 0..30 {
        a.set(&format!("k:{i:02}"), Bytes::from("x"), opts(600, &[]))
            .await
            .unwrap();
    }
    let mut listed = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = b.scan(&Glob::new("k:*"), cursor.as_deref(), 7).await;
        for k in &page.keys {
            assert_eq!(k.size, 1);
            listed.insert(k.key.to_string());
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed.len(), 30);

    // Cluster-wide statistics count both instances.
    let cluster = a.cluster_stats().await.unwrap();
    assert!(cluster.instances >= 1, "{cluster:?}");
    b.cluster_stats().await.unwrap();
    assert_eq!(a.cluster_stats().await.unwrap().instances, 2);

    // A reset on A empties Redis and B's memory tier: 35 broadcasts from A so far.
    received(&b, 35).await;
    b.get("k:01")
        .await
        .expect("k:01 is there (now in B's memory too)");
    a.reset().await;
    received(&b, 36).await;
    assert!(b.get("k:01").await.is_none());
    assert_eq!(b.stats().l1.entries, 0);
}

#[tokio::test]
async fn without_redis_the_memory_tier_keeps_serving_and_redis_resumes_after_a_restart() {
    let mut server = RedisServer::start();
    let a = instance(&server);
    subscribed(&a).await;
    a.set("cached", Bytes::from("v"), opts(600, &[]))
        .await
        .unwrap();

    server.kill();
    for _ in 0..20 {
        assert_eq!(
            a.get("cached").await.expect("served from memory").bytes,
            "v"
        );
    }
    // Writes and deletes work on memory alone.
    assert_eq!(
        a.set("offline", Bytes::from("w"), opts(600, &[]))
            .await
            .unwrap(),
        SetOutcome::Created
    );
    assert_eq!(a.get("offline").await.unwrap().bytes, "w");
    assert!(a.get("never-written").await.is_none());
    let stats = a.stats();
    assert!(stats.l2.write_errors >= 1, "{stats:?}");

    // Redis comes back (empty): the subscription returns, memory is emptied (it may have
    // missed invalidations), and Redis takes writes again.
    server.restart();
    let flushes = a.stats().invalidation.l1_flushes;
    for _ in 0..500 {
        let s = a.stats();
        if s.invalidation.subscribed && s.invalidation.l1_flushes > flushes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.stats().invalidation.subscribed, "{:?}", a.stats());
    let mut stored = false;
    for _ in 0..100 {
        a.set("after", Bytes::from("x"), opts(600, &[]))
            .await
            .unwrap();
        if a.stats().l2.writes >= 2 {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "writes reach Redis again: {:?}", a.stats());
    let b = instance(&server);
    assert_eq!(b.get("after").await.unwrap().bytes, "x");
}
