//! Engine vs raw moka with the same capacity: get and set throughput on 1 and 2 threads.
//!
//! `cargo bench -p keel-cache --bench engine` — results and the comparison in docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keel_cache::{Cache, CacheConfig, SetOptions};

const KEYS: usize = 10_000;
const OPS_PER_THREAD: u64 = 200_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user:{i:06}:profile")).collect()
}

/// Per-entry expiry, as the engine needs for per-entry TTLs.
struct Ttl;

impl moka::Expiry<Arc<str>, Bytes> for Ttl {
    fn expire_after_create(&self, _: &Arc<str>, _: &Bytes, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

/// moka configured as the engine configures it: same capacity, a byte weigher, per-entry expiry.
fn raw_moka() -> moka::sync::Cache<Arc<str>, Bytes> {
    moka::sync::Cache::builder()
        .max_capacity(256 * 1024 * 1024)
        .weigher(|k: &Arc<str>, v: &Bytes| (k.len() + v.len() + 160) as u32)
        .expire_after(Ttl)
        .build()
}

/// Runs `op(thread, i)` `OPS_PER_THREAD` times on each of `threads` threads; returns the wall time
/// scaled to `iters` batches.
fn parallel(threads: usize, iters: u64, op: impl Fn(usize, usize) + Sync) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let op = &op;
                s.spawn(move || {
                    for i in 0..OPS_PER_THREAD as usize {
                        op(t, i);
                    }
                });
            }
        });
        total += start.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let value = Bytes::from(vec![b'x'; 100]);
    let engine = Cache::new(CacheConfig::default());
    let moka = raw_moka();
    for k in &keys {
        engine.set(k, value.clone(), SetOptions::default()).unwrap();
        moka.insert(Arc::from(k.as_str()), value.clone());
    }
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("get/{threads}t"));
        group.throughput(Throughput::Elements(OPS_PER_THREAD * threads as u64));
        group.sample_size(20);
        group.bench_function("moka", |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |t, i| {
                    std::hint::black_box(moka.get(keys[(i * 7 + t * 13) % KEYS].as_str()));
                })
            })
        });
        group.bench_function("keel", |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |t, i| {
                    std::hint::black_box(engine.get(&keys[(i * 7 + t * 13) % KEYS]));
                })
            })
        });
        group.finish();

        let mut group = c.benchmark_group(format!("set/{threads}t"));
        group.throughput(Throughput::Elements(OPS_PER_THREAD * threads as u64));
        group.sample_size(10);
        group.bench_function("moka", |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |t, i| {
                    moka.insert(
                        Arc::from(keys[(i * 7 + t * 13) % KEYS].as_str()),
                        value.clone(),
                    );
                })
            })
        });
        group.bench_function("keel", |b| {
            b.iter_custom(|iters| {
                parallel(threads, iters, |t, i| {
                    engine
                        .set(
                            &keys[(i * 7 + t * 13) % KEYS],
                            value.clone(),
                            SetOptions::default(),
                        )
                        .unwrap();
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
