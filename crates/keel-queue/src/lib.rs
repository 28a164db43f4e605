//! keel's durable job queue.
//!
//! # Layout
//! - [`model`]: jobs, their states and options, leases, backoff.
//! - [`Store`]: where jobs live and how they move between states; every backend passes the
//!   same [`conformance`] suite.
//! - [`SqliteStore`]: the embedded default — one SQLite file in WAL mode, written by a single
//!   thread that commits many operations in one transaction (group commit).
//!
//! Time (delays, backoff, leases) comes from an injectable [`Clock`](keel_core::Clock).

pub mod conformance;
mod error;
pub mod model;
mod sqlite;
mod store;

pub use error::QueueError;
pub use model::{Backoff, BackoffKind, Fetched, Job, JobOptions, JobState, NewJob};
pub use sqlite::{Durability, SqliteStore};
pub use store::{Failure, Store, StoreFuture};
