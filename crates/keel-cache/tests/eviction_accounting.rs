//! Counting evictions nobody saw, in a process of its own: the memory tier frees evicted
//! values through epoch-based reclamation shared by every cache in the process, so tests
//! running beside this one would decide when its evicted values are really gone (and so when
//! the key index can notice). Alone, the order of reclamation is the same on every run.

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, Glob, SetOptions, SetOutcome};
use keel_core::{ByteSize, Clock};

#[test]
fn evictions_nobody_saw_are_counted_once_by_rewrites_and_listings() {
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize(256 * 1024);
    let cache = Cache::with_clock(config, Clock::mock().0);
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
