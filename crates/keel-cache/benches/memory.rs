//! Bytes of overhead per entry: stored bytes and process RSS after 1,000,000 small entries.
//!
//! `cargo bench -p keel-cache --bench memory` (Linux: reads VmRSS from /proc/self/status).

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, SetOptions};
use keel_core::ByteSize;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

fn main() {
    const N: u64 = 1_000_000;
    let mut config = CacheConfig::default();
    config.max_memory = ByteSize::gib(2);
    let cache = Cache::new(config);
    let value = Bytes::from(vec![b'v'; 32]);
    let before = rss_bytes();
    for i in 0..N {
        cache.set(&format!("user:{i:07}"), value.clone(), SetOptions::default()).unwrap();
    }
    cache.run_pending_tasks();
    let after = rss_bytes();
    let stats = cache.stats();
    let payload = 12 + 32; // key "user:NNNNNNN" + value
    println!("entries: {}", stats.entries);
    println!("logical bytes per entry (key + value): {:.1}", stats.logical_bytes as f64 / stats.entries as f64);
    println!("stored bytes per entry (as charged against max_memory): {:.1}", stats.stored_bytes as f64 / stats.entries as f64);
    println!("RSS growth per entry: {:.1} bytes ({:.1} bytes over the {payload}-byte payload)", (after - before) as f64 / N as f64, (after - before) as f64 / N as f64 - payload as f64);
    println!("RSS after: {:.1} MiB", after as f64 / 1048576.0);
}
