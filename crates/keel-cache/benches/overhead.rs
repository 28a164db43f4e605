//! The engine's overhead over raw moka, one operation kind per process so runs do not disturb
//! each other: `cargo bench -p keel-cache --bench overhead -- <keel|moka|moka-listener> <get|set>
//! <ops> [threads]`. `moka-listener` is raw moka with a no-op eviction listener attached, to
//! show what the listener alone costs.
//! Prints nanoseconds per operation. `bench/cache_engine.sh` runs it repeatedly, alternating,
//! and under callgrind for instruction counts, which do not vary with machine noise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, SetOptions};

/// Distinct keys the operations cycle over, unless `KEYS` says otherwise: the working set decides
/// whether a write's extra index lookups hit the CPU caches.
const KEYS: usize = 10_000;

/// Per-entry expiry, as the engine needs for per-entry TTLs.
struct Ttl;

impl moka::Expiry<Arc<str>, Bytes> for Ttl {
    fn expire_after_create(&self, _: &Arc<str>, _: &Bytes, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let engine = args.get(1).map_or("keel", String::as_str);
    let op = args.get(2).map_or("get", String::as_str);
    let ops: usize = args
        .get(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let threads: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(1);
    let key_count: usize = std::env::var("KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(KEYS);
    let keys: Vec<String> = (0..key_count)
        .map(|i| format!("user:{i:06}:profile"))
        .collect();
    let value = Bytes::from(vec![b'x'; 100]);

    let keel = (engine == "keel").then(|| Cache::new(CacheConfig::default()));
    // moka configured as the engine configures it: same capacity, a byte weigher, per-entry expiry.
    let moka = engine.starts_with("moka").then(|| {
        let builder = moka::sync::Cache::<Arc<str>, Bytes>::builder()
            .max_capacity(256 * 1024 * 1024)
            .weigher(|k: &Arc<str>, v: &Bytes| (k.len() + v.len() + 680) as u32)
            .expire_after(Ttl);
        if engine == "moka-listener" {
            builder.eviction_listener(|_, _, _| {}).build()
        } else {
            builder.build()
        }
    });
    for k in &keys {
        if let Some(c) = &keel {
            c.set(k, value.clone(), SetOptions::default()).unwrap();
        }
        if let Some(m) = &moka {
            m.insert(Arc::from(k.as_str()), value.clone());
        }
    }
    let per_thread = ops / threads.max(1);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads.max(1) {
            let (keel, moka, keys, value) = (&keel, &moka, &keys, &value);
            s.spawn(move || {
                for i in 0..per_thread {
                    let key = &keys[(i * 7 + t * 13) % key_count];
                    match (keel, moka, op) {
                        (Some(c), _, "get") => drop(std::hint::black_box(c.get(key))),
                        (Some(c), _, _) => drop(c.set(key, value.clone(), SetOptions::default())),
                        (_, Some(m), "get") => drop(std::hint::black_box(m.get(key.as_str()))),
                        (_, Some(m), _) => m.insert(Arc::from(key.as_str()), value.clone()),
                        _ => {}
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    if ops > 0 {
        println!(
            "{engine} {op} {threads}t: {:.1} ns/op",
            elapsed.as_nanos() as f64 * threads as f64 / ops as f64
        );
    }
}
