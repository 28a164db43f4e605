//! Live job events for subscribers (the API's Server-Sent Events stream): added, active,
//! progress, completed, failed, retrying, stalled, cancelled, paused, resumed.
//!
//! Nothing is built or sent while nobody listens, so the hot path pays one atomic load. A
//! subscriber that falls behind by more than [`CAPACITY`] events is told how many it missed.

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Events buffered per subscriber before it starts missing some.
pub(crate) const CAPACITY: usize = 4_096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A job was added (also by a schedule).
    Added,
    /// A job was handed to a worker.
    Active,
    /// A worker reported progress.
    Progress,
    /// A job completed.
    Completed,
    /// A job failed for good.
    Failed,
    /// An attempt failed; the job will be retried.
    Retrying,
    /// Leases expired without a report (`count` jobs; no job id).
    Stalled,
    /// A job was cancelled.
    Cancelled,
    /// The queue was paused.
    Paused,
    /// The queue was resumed.
    Resumed,
}

impl EventKind {
    /// The name used as the SSE event type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Active => "active",
            Self::Progress => "progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Stalled => "stalled",
            Self::Cancelled => "cancelled",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueEvent {
    /// What happened.
    pub event: EventKind,
    /// The queue (empty for `stalled`, which spans queues).
    pub queue: String,
    /// The job, where the event is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Extra facts: `{"progress", "data"}`, `{"count"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl QueueEvent {
    /// An event about job `id` of `queue`.
    pub fn job(event: EventKind, queue: &str, id: &str) -> Self {
        Self {
            event,
            queue: queue.to_owned(),
            job: Some(id.to_owned()),
            data: None,
        }
    }
}

/// Where events go.
pub(crate) struct EventBus {
    sender: broadcast::Sender<QueueEvent>,
}

impl EventBus {
    pub(crate) fn new() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }

    /// Sends the events `make` builds, if anyone listens.
    pub(crate) fn emit<I: IntoIterator<Item = QueueEvent>>(&self, make: impl FnOnce() -> I) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for event in make() {
            let _ = self.sender.send(event);
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.sender.subscribe()
    }
}
