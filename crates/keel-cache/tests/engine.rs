//! The cache engine's behaviour: TTLs on a mock clock, eviction by bytes, compression, tags,
//! patterns and cursor paging, single-flight loading, statistics.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use keel_cache::{
    Cache, CacheConfig, CacheError, Glob, LoadError, LoadOptions, SetOptions, SetOutcome,
};
use keel_core::{ByteSize, Clock, HumanDuration, MockClock};

fn mock_cache(config: CacheConfig) -> (Cache, MockClock) {
    let (clock, handle) = Clock::mock();
    (Cache::with_clock(config, clock), handle)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn entries_expire_by_ttl_on_the_mock_clock() {
    let (cache, time) = mock_cache(CacheConfig::default());
    cache
        .set("short", "a".into(), SetOptions::ttl(secs(30)))
        .unwrap();
    cache
        .set("default", "b".into(), SetOptions::default())
        .unwrap();
    cache
        .set("forever", "c".into(), SetOptions::ttl(Duration::ZERO))
        .unwrap();

    assert_eq!(cache.get("short").unwrap().ttl_remaining(), Some(secs(30)));
    time.advance(secs(29));
    assert_eq!(cache.get("short").unwrap().ttl_remaining(), Some(secs(1)));
    time.advance(secs(1));
    assert!(cache.get("short").is_none(), "expired exactly at its TTL");
    assert!(cache.get("default").is_some());
    time.advance(secs(300 - 30));
    assert!(cache.get("default").is_none(), "default TTL is 5 minutes");
    time.advance(secs(86_400 * 365));
    let forever = cache.get("forever").unwrap();
    assert_eq!(forever.ttl_remaining(), None);
    assert_eq!(cache.stats().evictions.expired, 2);
}

#[test]
fn default_ttl_zero_means_no_expiry() {
    let mut config = CacheConfig::default();
    config.default_ttl = HumanDuration::from_secs(0);
    let (cache, time) = mock_cache(config);
    cache.set("k", "v".into(), SetOptions::default()).unwrap();
    time.advance(secs(1_000_000));
    assert!(cache.get("k").is_some());
}

#[test]
fn eviction_keeps_stored_bytes_within_max_memory() {
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize::mib(4);
    config.compress_min_bytes = ByteSize(1 << 30); // measure raw bytes
    let cache = Cache::new(config);
    let value = Bytes::from(vec![7u8; 1000]);
    let total_written = 3 * 4 * 1024 * 1024;
    let mut written = 0;
    let mut i = 0;
    while written < total_written {
        cache
            .set(&format!("key:{i}"), value.clone(), SetOptions::default())
            .unwrap();
        written += 1000;
        i += 1;
    }
    cache.run_pending_tasks();
    let stats = cache.stats();
    assert!(stats.stored_bytes <= 4 * 1024 * 1024, "{stats:?}");
    assert!(stats.evictions.size > 0, "{stats:?}");
    assert!(
        stats.entries > 1000,
        "most of the budget is used: {stats:?}"
    );
    assert_eq!(stats.entries + stats.evictions.size, i as u64);
}

#[test]
fn evictions_nobody_saw_are_counted_once_by_rewrites_and_listings() {
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize(256 * 1024);
    let (cache, _) = mock_cache(config);
    let value = Bytes::from(vec![1u8; 100]);
    let keys: Vec<String> = (0..2000).map(|i| format!("k:{i:04}")).collect();
    let mut replaced = 0;
    for round in 0..2 {
        for key in &keys {
            let was_live = cache.contains(key);
            let outcome = cache
                .set(key, value.clone(), SetOptions::default())
                .unwrap();
            // A key whose value was evicted is created again, not replaced.
            assert_eq!(outcome == SetOutcome::Replaced, was_live, "{key}");
            replaced += usize::from(was_live);
        }
        if round == 0 {
            assert!(replaced == 0);
            // Let the memory tier evict; nothing is swept yet.
            cache.stats();
        }
    }
    assert!(replaced > 0 && replaced < keys.len(), "{replaced}");
    cache.run_pending_tasks();
    let stats = cache.stats();
    // Every write is still there, was replaced, or was counted as evicted — exactly once.
    assert_eq!(
        stats.entries + stats.evictions.size,
        (2 * keys.len() - replaced) as u64,
        "{stats:?}"
    );
    // A listing meets only live keys, and the index matches the store.
    let listed = cache.scan(&Glob::new("k:*"), None, 10_000);
    assert!(listed.next_cursor.is_none());
    assert_eq!(listed.keys.len() as u64, stats.entries);
    assert_eq!(cache.stats().evictions.size, stats.evictions.size);
}

#[test]
fn max_entries_bounds_the_count() {
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize::mib(1);
    config.max_entries = 100;
    let cache = Cache::new(config);
    for i in 0..1000 {
        cache
            .set(&format!("k{i}"), "v".into(), SetOptions::default())
            .unwrap();
    }
    cache.run_pending_tasks();
    assert!(cache.stats().entries <= 100, "{:?}", cache.stats());
}

#[test]
fn large_values_are_compressed_when_it_saves_space() {
    let (cache, _) = mock_cache(CacheConfig::default());
    let json: String = (0..400)
        .map(|i| format!("{{\"id\":{i},\"name\":\"user-{i}\",\"active\":true}},"))
        .collect();
    let value = Bytes::from(json);
    cache
        .set(
            "list",
            value.clone(),
            SetOptions {
                content_type: Some("application/json".into()),
                ..SetOptions::default()
            },
        )
        .unwrap();
    let stats = cache.stats();
    assert!(stats.stored_bytes < stats.logical_bytes, "{stats:?}");
    let got = cache.get("list").unwrap();
    assert_eq!(got.bytes, value);
    assert_eq!(got.content_type(), Some("application/json"));

    // Unless the writer asks for the bytes to be kept as they are.
    cache.reset();
    let options = SetOptions {
        uncompressed: true,
        ..SetOptions::default()
    };
    cache.set("list", value.clone(), options).unwrap();
    let stats = cache.stats();
    assert!(stats.stored_bytes >= stats.logical_bytes, "{stats:?}");
    assert_eq!(cache.get("list").unwrap().bytes, value);

    // Incompressible data is stored as is, and small values are never compressed.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    cache
        .set("noise", Bytes::from(noise.clone()), SetOptions::default())
        .unwrap();
    assert_eq!(cache.get("noise").unwrap().bytes, noise);
    cache
        .set("small", "tiny".into(), SetOptions::default())
        .unwrap();
    assert_eq!(cache.get("small").unwrap().bytes, "tiny");
}

#[test]
fn tags_invalidate_their_entries_only() {
    let (cache, _) = mock_cache(CacheConfig::default());
    let tagged = |tags: &[&str]| SetOptions {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..SetOptions::default()
    };
    cache
        .set("u:1", "a".into(), tagged(&["users", "team:7"]))
        .unwrap();
    cache.set("u:2", "b".into(), tagged(&["users"])).unwrap();
    cache.set("p:1", "c".into(), tagged(&["posts"])).unwrap();
    // Re-set without the tag: the old tag no longer applies.
    cache
        .set("u:2", "b2".into(), tagged(&["archived"]))
        .unwrap();

    assert_eq!(cache.invalidate_tag("users"), 1);
    assert!(cache.get("u:1").is_none());
    assert_eq!(cache.get("u:2").unwrap().bytes, "b2");
    assert!(cache.get("p:1").is_some());
    assert_eq!(cache.invalidate_tag("users"), 0);
    assert_eq!(cache.invalidate_tag("archived"), 1);
    assert_eq!(cache.stats().evictions.tag, 2);
}

#[test]
fn set_reports_created_or_replaced_and_delete_reports_presence() {
    let (cache, time) = mock_cache(CacheConfig::default());
    assert_eq!(
        cache
            .set("k", "1".into(), SetOptions::ttl(secs(5)))
            .unwrap(),
        SetOutcome::Created
    );
    assert_eq!(
        cache
            .set("k", "2".into(), SetOptions::ttl(secs(5)))
            .unwrap(),
        SetOutcome::Replaced
    );
    time.advance(secs(5));
    assert_eq!(
        cache.set("k", "3".into(), SetOptions::default()).unwrap(),
        SetOutcome::Created
    );
    assert!(cache.delete("k"));
    assert!(!cache.delete("k"));
    cache.run_pending_tasks();
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.logical_bytes, stats.stored_bytes),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn bad_input_is_refused_and_bulk_writes_are_all_or_nothing() {
    let mut config = CacheConfig::default();
    config.max_value_size = ByteSize(10);
    let (cache, _) = mock_cache(config);
    assert!(matches!(
        cache.set("", "v".into(), SetOptions::default()),
        Err(CacheError::InvalidKey(_))
    ));
    assert!(matches!(
        cache.set(&"k".repeat(513), "v".into(), SetOptions::default()),
        Err(CacheError::InvalidKey(_))
    ));
    assert!(matches!(
        cache.set("a\nb", "v".into(), SetOptions::default()),
        Err(CacheError::InvalidKey(_))
    ));
    assert!(
        cache
            .set(&"k".repeat(512), "v".into(), SetOptions::default())
            .is_ok()
    );
    assert!(matches!(
        cache.set("big", Bytes::from(vec![0; 11]), SetOptions::default()),
        Err(CacheError::ValueTooLarge { size: 11, max: 10 })
    ));
    let bad_tag = SetOptions {
        tags: vec!["a,b".into()],
        ..SetOptions::default()
    };
    assert!(matches!(
        cache.set("k", "v".into(), bad_tag),
        Err(CacheError::InvalidTag { .. })
    ));

    let batch = vec![
        ("one".to_owned(), Bytes::from("1"), SetOptions::default()),
        ("".to_owned(), Bytes::from("2"), SetOptions::default()),
    ];
    let err = cache.set_many(batch).unwrap_err();
    assert!(matches!(err, CacheError::InBatch { index: 1, .. }), "{err}");
    assert!(cache.get("one").is_none(), "nothing written");
}

#[test]
fn scan_pages_through_matching_keys_once_each() {
    let (cache, time) = mock_cache(CacheConfig::default());
    for i in 0..250 {
        cache
            .set(&format!("user:{i:03}"), "v".into(), SetOptions::default())
            .unwrap();
        cache
            .set(&format!("post:{i:03}"), "v".into(), SetOptions::default())
            .unwrap();
    }
    cache
        .set("user:expiring", "v".into(), SetOptions::ttl(secs(1)))
        .unwrap();
    time.advance(secs(2));
    let pattern = Glob::new("user:*");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = cache.scan(&pattern, cursor.as_deref(), 100);
        seen.extend(page.keys.iter().map(|k| k.key.to_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    // Each once (listings are ordered within a shard of the index, not overall).
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250);
    assert!(
        seen.iter()
            .all(|k| k.starts_with("user:") && k != "user:expiring")
    );
    let page = cache.scan(&Glob::new("user:00?"), None, 100);
    assert_eq!(page.keys.len(), 10);
    assert_eq!(page.keys[0].size, 1);
    assert!(page.next_cursor.is_none());
}

#[test]
fn cursor_paging_sees_every_stable_key_exactly_once_under_concurrent_churn() {
    let cache = Cache::new(CacheConfig::default());
    let stable: HashSet<String> = (0..2000).map(|i| format!("k:{i:05}")).collect();
    for k in &stable {
        cache.set(k, "v".into(), SetOptions::default()).unwrap();
    }
    let churn = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            for round in 0..20_000u32 {
                let key = format!("k:{:05}x{round}", round % 2000);
                cache.set(&key, "v".into(), SetOptions::default()).unwrap();
                if round % 2 == 0 {
                    cache.delete(&key);
                }
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = cache.scan(&Glob::new("k:*"), cursor.as_deref(), 50);
        seen.extend(page.keys.iter().map(|k| k.key.to_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    churn.join().unwrap();
    let mut counts = std::collections::HashMap::new();
    for k in &seen {
        *counts.entry(k.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "a key was returned twice");
    for k in &stable {
        assert_eq!(counts.get(k), Some(&1), "{k} missed");
    }
}

#[test]
fn pattern_delete_runs_in_batches() {
    let (cache, _) = mock_cache(CacheConfig::default());
    for i in 0..120 {
        cache
            .set(&format!("user:123:{i}"), "v".into(), SetOptions::default())
            .unwrap();
    }
    cache
        .set("user:124:1", "v".into(), SetOptions::default())
        .unwrap();
    let pattern = Glob::new("user:123:*");
    let (mut total, mut cursor, mut calls) = (0, None::<String>, 0);
    loop {
        let (n, next) = cache.delete_matching(&pattern, cursor.as_deref(), 50);
        total += n;
        calls += 1;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(total, 120);
    assert!(calls >= 3);
    assert!(cache.get("user:124:1").is_some());
    assert_eq!(cache.stats().evictions.pattern, 120);
    assert_eq!(cache.reset(), 1);
    assert!(cache.get("user:124:1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_flight_runs_the_loader_once_for_100_callers() {
    let cache = Cache::new(CacheConfig::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, runs, gate) = (cache.clone(), runs.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("report", LoadOptions::default(), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok::<_, std::io::Error>(Bytes::from_static(b"computed"))
                })
                .await
        }));
    }
    // Let every caller reach the flight, then release the loader.
    while runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().bytes, "computed");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn loader_errors_are_not_cached_unless_negative_caching_is_on() {
    let (cache, time) = mock_cache(CacheConfig::default());
    let runs = AtomicUsize::new(0);
    let failing = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Err::<Bytes, _>("upstream down".to_owned())
    };
    let err = cache
        .get_or_load("k", LoadOptions::default(), failing)
        .await
        .unwrap_err();
    assert!(matches!(err, LoadError::Loader(ref e) if **e == "upstream down"));
    let _ = cache
        .get_or_load("k", LoadOptions::default(), failing)
        .await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "errors are not cached");

    let negative = LoadOptions {
        negative_ttl: Some(secs(10)),
        ..LoadOptions::default()
    };
    let _ = cache.get_or_load("n", negative.clone(), failing).await;
    let again = cache
        .get_or_load("n", negative.clone(), failing)
        .await
        .unwrap_err();
    assert!(matches!(again, LoadError::NegativeCached(ref m) if m == "upstream down"));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    time.advance(secs(10));
    let ok = cache
        .get_or_load("n", negative, || async {
            Ok::<_, String>(Bytes::from_static(b"back"))
        })
        .await
        .unwrap();
    assert_eq!(ok.bytes, "back");
}

#[tokio::test]
async fn an_abandoned_load_hands_over_to_a_waiter() {
    let cache = Cache::new(CacheConfig::default());
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("k", LoadOptions::default(), || async {
                    std::future::pending::<()>().await;
                    Ok::<_, String>(Bytes::new())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("k", LoadOptions::default(), || async {
                    Ok::<_, String>(Bytes::from_static(b"mine"))
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    leader.abort();
    assert_eq!(waiter.await.unwrap().unwrap().bytes, "mine");
}

#[test]
fn statistics_count_hits_misses_and_recent_ratios() {
    let (cache, time) = mock_cache(CacheConfig::default());
    cache
        .set("k", "v".into(), SetOptions::ttl(Duration::ZERO))
        .unwrap();
    for _ in 0..3 {
        cache.get("k");
    }
    cache.get("missing");
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.sets), (3, 1, 1));
    assert_eq!(s.hit_ratio, 0.75);
    assert_eq!(s.hit_ratio_1m, 0.75);
    time.advance(secs(120));
    cache.get("missing");
    let s = cache.stats();
    assert_eq!(s.hit_ratio_1m, 0.0);
    assert_eq!(s.hit_ratio_5m, 0.6);
    assert_eq!(s.hit_ratio, 0.6);
    assert_eq!(s.max_memory, 256 * 1024 * 1024);
}

#[test]
fn expired_entries_are_reclaimed_by_the_sweep_without_reads() {
    let (cache, time) = mock_cache(CacheConfig::default());
    for i in 0..100 {
        cache
            .set(&format!("k{i}"), "v".into(), SetOptions::ttl(secs(1)))
            .unwrap();
    }
    cache
        .set("stays", "v".into(), SetOptions::ttl(secs(60)))
        .unwrap();
    time.advance(secs(2));
    // Not yet reclaimed: nobody read them and no sweep ran.
    assert_eq!(cache.stats().entries, 101);
    cache.run_pending_tasks();
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions.expired), (1, 100));
    assert!(cache.contains("stays") && !cache.contains("k1"));
}
