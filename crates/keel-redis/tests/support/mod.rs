//! Helpers shared by the tests of the two-tier cache.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use keel_redis::TieredCache;

/// Waits (bounded) until `cache` receives invalidations.
pub async fn subscribed(cache: &TieredCache) {
    for _ in 0..500 {
        if cache.stats().invalidation.subscribed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no subscription: {:?}", cache.stats());
}

/// Waits (bounded) until `cache` has received `n` invalidations.
pub async fn received(cache: &TieredCache, n: u64) {
    for _ in 0..500 {
        if cache.stats().invalidation.received >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("invalidation not received: {:?}", cache.stats());
}
