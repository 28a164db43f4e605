//! The engine's overhead over raw moka:
//! `cargo bench -p keel-cache --bench overhead -- <engine> <get|set> <ops> [threads]`.
//!
//! - `keel`, `moka`: one engine in the process; prints its nanoseconds per operation.
//! - `moka-listener`: raw moka with a no-op eviction listener attached, to show what the
//!   listener alone costs.
//! - `pair`: both engines in one process, taking turns in slices of `SLICE` operations (the
//!   first to go alternates), so a machine that speeds up or slows down during the run does so
//!   for both alike; prints each one's nanoseconds per operation over all its slices.
//!
//! `bench/cache_engine.sh` runs it repeatedly, and under callgrind and cachegrind for
//! instruction and cache-miss counts, which do not vary with machine noise. It runs on the
//! system allocator, as an application using the engine as a library may; `overhead_jemalloc`
//! is the same on jemalloc, which keel's binary runs on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_cache::{Cache, CacheConfig, SetOptions};

/// Distinct keys the operations cycle over, unless `KEYS` says otherwise: the working set decides
/// whether a write's extra index lookups hit the CPU caches.
const KEYS: usize = 10_000;
/// Operations per turn in `pair` mode, unless `SLICE` says otherwise: many times the key count,
/// so the turn's first pass over the keys (refilling the CPU caches after the other engine's
/// turn) is a small part of it.
const SLICE: usize = 250_000;

/// Per-entry expiry, as the engine needs for per-entry TTLs.
struct Ttl;

impl moka::Expiry<Arc<str>, Bytes> for Ttl {
    fn expire_after_create(&self, _: &Arc<str>, _: &Bytes, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

/// One engine under test.
enum Engine {
    Keel(Cache),
    Moka(moka::sync::Cache<Arc<str>, Bytes>),
}

impl Engine {
    fn build(name: &str) -> Self {
        if name == "keel" {
            return Self::Keel(Cache::new(CacheConfig::default()));
        }
        // moka configured as the engine configures it: same capacity, a byte weigher,
        // per-entry expiry.
        let builder = moka::sync::Cache::<Arc<str>, Bytes>::builder()
            .max_capacity(256 * 1024 * 1024)
            .weigher(|k: &Arc<str>, v: &Bytes| (k.len() + v.len() + 680) as u32)
            .expire_after(Ttl);
        Self::Moka(if name == "moka-listener" {
            builder.eviction_listener(|_, _, _| {}).build()
        } else {
            builder.build()
        })
    }

    fn get(&self, key: &str) {
        match self {
            Self::Keel(c) => drop(std::hint::black_box(c.get(key))),
            Self::Moka(m) => drop(std::hint::black_box(m.get(key))),
        }
    }

    /// Stores a fresh copy of `value`, as a value arriving with a request is its own
    /// allocation (one buffer shared by every entry would have two threads contend for its
    /// reference count on every read).
    fn set(&self, key: &str, value: &[u8]) {
        let value = Bytes::copy_from_slice(value);
        match self {
            Self::Keel(c) => drop(c.set(key, value, SetOptions::default())),
            Self::Moka(m) => m.insert(Arc::from(key), value),
        }
    }

    /// Runs `ops` operations of kind `op` over `threads` threads; returns the wall time.
    fn run(&self, op: &str, ops: usize, threads: usize, keys: &[String], value: &[u8]) -> Duration {
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || self.work(op, ops / threads, t, threads, keys, value));
            }
        });
        started.elapsed()
    }

    /// Thread `t`'s share of a run: `ops` operations of kind `op`.
    fn work(&self, op: &str, ops: usize, t: usize, threads: usize, keys: &[String], value: &[u8]) {
        // Each thread starts its own part of the way through the keys, so threads do not walk
        // the same keys a few operations apart (which would measure two cores passing each
        // key's cache lines back and forth, not the engine).
        let start = t * keys.len() / threads;
        for i in 0..ops {
            // A different key each time, striding through all of them.
            let key = &keys[(start + i * 7) % keys.len()];
            if op == "get" {
                self.get(key);
            } else {
                self.set(key, value);
            }
        }
    }
}

/// `pair` mode: the engines take turns in slices of `slice` operations, the first to go
/// alternating, on the same `threads` threads throughout (threads started per slice would
/// start on one CPU and leave part of each slice to the scheduler's balancing). Returns the
/// wall time each engine spent, and the operations each ran.
fn pair(
    engines: &[Engine],
    op: &str,
    ops: usize,
    slice: usize,
    threads: usize,
    keys: &[String],
    value: &[u8],
) -> ([Duration; 2], usize) {
    let turns = ops.div_ceil(slice);
    let barrier = std::sync::Barrier::new(threads + 1);
    let order = |turn: usize, i: usize| (i + turn) % 2;
    let mut spent = [Duration::ZERO; 2];
    std::thread::scope(|s| {
        for t in 0..threads {
            let barrier = &barrier;
            s.spawn(move || {
                for turn in 0..turns {
                    for i in 0..2 {
                        barrier.wait();
                        engines[order(turn, i)].work(op, slice / threads, t, threads, keys, value);
                        barrier.wait();
                    }
                }
            });
        }
        for turn in 0..turns {
            for i in 0..2 {
                barrier.wait();
                let started = Instant::now();
                barrier.wait();
                spent[order(turn, i)] += started.elapsed();
            }
        }
    });
    (spent, turns * (slice / threads) * threads)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn ns_per_op(elapsed: Duration, ops: usize, threads: usize) -> f64 {
    elapsed.as_nanos() as f64 * threads as f64 / ops.max(1) as f64
}

pub(crate) fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let engine = args.get(1).map_or("keel", String::as_str);
    let op = args.get(2).map_or("get", String::as_str);
    let ops: usize = args
        .get(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let threads: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let keys: Vec<String> = (0..env_usize("KEYS", KEYS))
        .map(|i| format!("user:{i:06}:profile"))
        .collect();
    let value = vec![b'x'; 100];

    let names: &[&str] = if engine == "pair" {
        &["moka", "keel"]
    } else {
        std::slice::from_ref(&engine)
    };
    let engines: Vec<Engine> = names.iter().map(|name| Engine::build(name)).collect();
    for e in &engines {
        for k in &keys {
            e.set(k, &value);
        }
    }
    if ops == 0 {
        return;
    }
    if engines.len() == 1 {
        let elapsed = engines[0].run(op, ops, threads, &keys, &value);
        println!(
            "{engine} {op} {threads}t: {:.1} ns/op",
            ns_per_op(elapsed, ops, threads)
        );
        return;
    }
    let slice = env_usize("SLICE", SLICE).min(ops);
    let (spent, done) = pair(&engines, op, ops, slice, threads, &keys, &value);
    println!(
        "pair {op} {threads}t: moka {:.1} ns/op, keel {:.1} ns/op",
        ns_per_op(spent[0], done, threads),
        ns_per_op(spent[1], done, threads)
    );
}
