//! keel's cache engine, usable on its own in any Rust service.
//!
//! # Layout
//! - [`Cache`]: the engine — a [`moka`] memory tier bounded by bytes (TinyLFU admission), TTLs
//!   read from an injectable [`Clock`](keel_core::Clock), tags, Redis-style glob listing and
//!   deletion in cursor pages, LZ4 compression of large values, and exact statistics.
//! - [`Cache::get_or_load`]: cache-aside with single-flight — N concurrent misses on one key
//!   run the loader once (`flight`).
//! - [`Glob`]: Redis `KEYS` pattern semantics.
//! - [`CacheConfig`]: the `[cache]` config section.
//! - [`CacheStats`]: hits, misses, ratios, evictions by cause, entries and bytes.
//! - Inside: `index` (the sharded key index, holding a weak reference to each stored value so it
//!   learns of evictions without a moka eviction listener), `maintenance` (the sweep, the
//!   once-a-second thread, reset and statistics), `listing` (glob walks), `tags`.
//!
//! A second tier (Redis) slots in under [`Cache`] without changing its callers.
//!
//! See `docs/caching.md` for TTLs, eviction, patterns, tags, compression and the statistics.

mod cache;
mod config;
mod entry;
mod error;
mod flight;
pub mod glob;
mod index;
mod listing;
mod maintenance;
mod stats;
mod tags;

pub use cache::{Cache, CacheValue, SetOptions, SetOutcome};
pub use config::{CacheConfig, CacheConfigError};
pub use entry::Meta;
pub use error::{CacheError, LoadError, MAX_KEY_BYTES, MAX_TAG_BYTES, validate_key, validate_tag};
pub use flight::LoadOptions;
pub use glob::Glob;
pub use listing::{KeyInfo, KeyPage};
pub use stats::{CacheStats, Evictions};
