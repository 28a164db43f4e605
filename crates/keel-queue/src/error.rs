//! What can go wrong with the queue.

/// A refused or failed queue operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A field of the request is invalid; nothing was written.
    #[error("{field}: {detail}")]
    Invalid {
        /// The field, e.g. `jobs[3].attempts`.
        field: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// No such job.
    #[error("no job {0}")]
    NoJob(String),
    /// The lease token does not match the job's current lease (expired, or another worker's),
    /// or the job is not active; nothing changed.
    #[error("job {id}: {reason}")]
    Conflict {
        /// The job.
        id: String,
        /// Why the operation was refused.
        reason: String,
    },
    /// The store failed (disk full, corrupted file, …).
    #[error("queue store: {0}")]
    Store(String),
    /// The store cannot be reached for now (a shared store's server is down or slow); the
    /// operation may or may not have taken effect, and can be tried again.
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
}

impl QueueError {
    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn conflict(id: &str, reason: impl Into<String>) -> Self {
        Self::Conflict {
            id: id.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<rusqlite::Error> for QueueError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.to_string())
    }
}
