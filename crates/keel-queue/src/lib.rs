//! keel's durable job queue.
//!
//! # Layout
//! - [`model`]: jobs, their states and options, leases, backoff.
//! - [`Store`]: where jobs live and how they move between states; every backend passes the
//!   same [`conformance`] suite.
//! - [`Queues`]: what the rest of keel uses — a store plus long-polling fetches woken by adds,
//!   and background recovery of stalled jobs.
//! - [`Schedule`]: repeatable jobs, by cron expression or interval.
//! - [`Worker`]: in-process Rust workers (`queues.worker("q").concurrency(8).run(handler)`).
//! - [`QueueConfig`]: the `[queue]` config section.
//! - [`SqliteStore`]: the embedded default — one SQLite file in WAL mode, written by a single
//!   thread that commits many operations in one transaction (group commit).
//!
//! Time (delays, backoff, leases) comes from an injectable [`Clock`](keel_core::Clock).

mod activity;
mod config;
pub mod conformance;
mod error;
mod events;
pub mod model;
mod push;
mod schedule;
mod service;
mod sqlite;
mod store;
mod worker;

pub use activity::ActivitySummary;
pub use config::{
    BackoffSettings, DeliverSettings, DurabilityMode, QueueBackend, QueueConfig, QueueConfigError,
    QueueSettings, QueueSettingsError,
};
pub use error::QueueError;
pub use events::{EventKind, QueueEvent};
pub use model::{
    Backoff, BackoffKind, Fetched, Job, JobOptions, JobState, NewJob, QueueLimits, QueueOverview,
    RateLimit,
};
pub use push::{DeliveryReport, sign as webhook_signature};
pub use schedule::{NewSchedule, Repeat, Schedule};
pub use service::{Events, FetchRequest, Queues, Timing, TimingObserver};
pub use sqlite::{Durability, SqliteStore};
pub use store::{
    Failure, JobFilter, JobPage, Moved, Retention, RetentionPolicy, Store, StoreFuture,
};
pub use worker::{Gate, Outcome, Worker, WorkerBuilder};
