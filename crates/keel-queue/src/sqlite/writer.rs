//! The single writer thread (group commit: every waiting operation in one transaction) and
//! the checkpoint thread beside it.

use super::*;

/// The most operations committed in one transaction.
pub(super) const MAX_BATCH: usize = 1024;

/// One operation on its way to the writer.
pub(super) trait Op: Send {
    /// Runs the operation inside the batch's transaction, in its own savepoint.
    fn apply(&mut self, conn: &Connection, now: u64);
    /// Answers the caller once the batch is committed (or failed to commit).
    fn finish(self: Box<Self>, commit: Result<(), QueueError>);
}

pub(super) struct Pending<T, F> {
    pub(super) work: Option<F>,
    /// Whether the work runs in a savepoint of its own: needed when it writes more than once
    /// and must be all or nothing. A single write statement is atomic by itself, and a
    /// savepoint costs a copy of every page the work touches.
    pub(super) atomic: bool,
    pub(super) outcome: Option<Result<T, QueueError>>,
    pub(super) reply: oneshot::Sender<Result<T, QueueError>>,
}

impl<T, F> Op for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection, u64) -> Result<T, QueueError> + Send,
{
    fn apply(&mut self, conn: &Connection, now: u64) {
        let Some(work) = self.work.take() else {
            return;
        };
        if !self.atomic {
            self.outcome = Some(work(conn, now));
            return;
        }
        if let Err(e) = run_cached(conn, "SAVEPOINT op") {
            self.outcome = Some(Err(e.into()));
            return;
        }
        let result = work(conn, now);
        let end = if result.is_ok() {
            run_cached(conn, "RELEASE op")
        } else {
            run_cached(conn, "ROLLBACK TO op").and_then(|()| run_cached(conn, "RELEASE op"))
        };
        self.outcome = Some(match end {
            Ok(()) => result,
            Err(e) => Err(e.into()),
        });
    }

    fn finish(self: Box<Self>, commit: Result<(), QueueError>) {
        let outcome = match (commit, self.outcome) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(QueueError::Store("operation did not run".into())),
        };
        let _ = self.reply.send(outcome);
    }
}

pub(super) fn write_loop(
    conn: &Connection,
    queue: &mpsc::Receiver<Box<dyn Op>>,
    clock: &Clock,
    restart: &AtomicBool,
) {
    while let Ok(first) = queue.recv() {
        if restart.swap(false, Ordering::Relaxed) {
            // Copies what the checkpoint thread has not yet (little); the WAL then starts over.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "restarting the job store's WAL failed");
            }
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let now = clock.unix_ms();
        let commit = match run_cached(conn, "BEGIN IMMEDIATE") {
            Ok(()) => {
                for op in &mut batch {
                    op.apply(conn, now);
                }
                run_cached(conn, "COMMIT").map_err(QueueError::from)
            }
            Err(e) => Err(e.into()),
        };
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for op in batch {
            op.finish(commit.clone());
        }
    }
}

/// How often the checkpoint thread copies committed WAL frames into the database file.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL frames (pages) after which the writer restarts the WAL from its beginning.
pub(super) const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is dropped. PASSIVE: it never
/// blocks the writer; what it cannot copy now it copies next time. Under steady writes the
/// WAL is never copied completely at a moment the writer starts, so SQLite never starts it
/// over: past [`WAL_RESTART_FRAMES`] this asks the writer to (see [`write_loop`]).
pub(super) fn checkpoint_loop(
    conn: &Connection,
    stopped: &mpsc::Receiver<()>,
    restart: &AtomicBool,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        match frames {
            Ok(frames) if frames >= WAL_RESTART_FRAMES => restart.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpointing the job store's WAL failed"),
        }
    }
}

/// Runs a parameterless statement, parsed once per connection.
pub(super) fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
