//! Bytes of overhead per entry: stored bytes and process RSS after 1,000,000 small entries.
//!
//! `cargo bench -p keel-cache --bench memory` (Linux: reads VmRSS from /proc/self/status);
//! `cargo bench -p keel-cache --bench memory -- moka` measures a raw moka cache with per-entry
//! expiry and the same keys and values, for comparison; `-- bounded` writes 3 × `max_memory` of
//! 1 KiB values and reports RSS against the bound.

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, SetOptions};
use keel_core::ByteSize;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

const N: u64 = 1_000_000;

fn raw_moka() {
    use std::sync::Arc;
    struct Ttl;
    impl moka::Expiry<Arc<str>, Bytes> for Ttl {
        fn expire_after_create(
            &self,
            _: &Arc<str>,
            _: &Bytes,
            _: std::time::Instant,
        ) -> Option<std::time::Duration> {
            Some(std::time::Duration::from_secs(300))
        }
    }
    let cache: moka::sync::Cache<Arc<str>, Bytes> = moka::sync::Cache::builder()
        .max_capacity(2 << 30)
        .weigher(|k: &Arc<str>, v: &Bytes| (k.len() + v.len()) as u32)
        .expire_after(Ttl)
        .build();
    let before = rss_bytes();
    for i in 0..N {
        // A value allocation per entry, as values arriving over HTTP have.
        cache.insert(
            Arc::from(format!("user:{i:07}").as_str()),
            Bytes::from(vec![b'v'; 32]),
        );
    }
    cache.run_pending_tasks();
    let after = rss_bytes();
    println!(
        "raw moka: RSS growth per entry: {:.1} bytes",
        (after - before) as f64 / N as f64
    );
}

/// Writes 3 × max_memory of 1 KiB values and reports RSS against the bound.
fn bounded() {
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize::mib(256);
    config.compress_min_bytes = ByteSize::gib(1);
    let cache = Cache::new(config);
    let before = rss_bytes();
    let total = 3 * 256 * 1024 * 1024u64;
    let mut written = 0u64;
    let mut i = 0u64;
    while written < total {
        let value = Bytes::from(vec![(i % 251) as u8; 1024]);
        cache
            .set(&format!("blob:{i:09}"), value, SetOptions::default())
            .unwrap();
        written += 1024;
        i += 1;
    }
    cache.run_pending_tasks();
    let after = rss_bytes();
    let stats = cache.stats();
    println!(
        "bounded: wrote {} MiB into max_memory 256 MiB: stored {:.1} MiB in {} entries, {} evicted",
        total >> 20,
        stats.stored_bytes as f64 / 1048576.0,
        stats.entries,
        stats.evictions.size
    );
    println!(
        "bounded: RSS growth {:.1} MiB ({:.2}x max_memory)",
        (after - before) as f64 / 1048576.0,
        (after - before) as f64 / (256.0 * 1048576.0)
    );
}

fn main() {
    if std::env::args().any(|a| a == "moka") {
        return raw_moka();
    }
    if std::env::args().any(|a| a == "bounded") {
        return bounded();
    }
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize::gib(2);
    let cache = Cache::new(config);
    let before = rss_bytes();
    for i in 0..N {
        // A value allocation per entry, as values arriving over HTTP have.
        cache
            .set(
                &format!("user:{i:07}"),
                Bytes::from(vec![b'v'; 32]),
                SetOptions::default(),
            )
            .unwrap();
    }
    cache.run_pending_tasks();
    let after = rss_bytes();
    let stats = cache.stats();
    let payload = 12 + 32; // key "user:NNNNNNN" + value
    println!("entries: {}", stats.entries);
    println!(
        "logical bytes per entry (key + value): {:.1}",
        stats.logical_bytes as f64 / stats.entries as f64
    );
    println!(
        "stored bytes per entry (as charged against max_memory): {:.1}",
        stats.stored_bytes as f64 / stats.entries as f64
    );
    println!(
        "RSS growth per entry: {:.1} bytes ({:.1} bytes over the {payload}-byte payload)",
        (after - before) as f64 / N as f64,
        (after - before) as f64 / N as f64 - payload as f64
    );
    println!("RSS after: {:.1} MiB", after as f64 / 1048576.0);
}
