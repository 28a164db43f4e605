//! The embedded store: one SQLite file in WAL mode, written by a single thread.
//!
//! Every operation is sent to the writer thread, which takes all operations waiting at that
//! moment, runs each inside its own savepoint of one transaction, commits once, and only then
//! answers them all (group commit): a thousand concurrent adds cost one fsync, not a thousand,
//! and nothing is acknowledged before it is committed. An operation that fails rolls back its
//! savepoint alone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use keel_core::Clock;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use tokio::sync::oneshot;

mod jobs;
mod limits;
mod reads;
mod schedules;
mod schema;
mod writer;

use jobs::*;
use reads::*;
use schema::*;
use writer::*;

use keel_core::sync::lock;
use limits::Limiter;

use crate::QueueError;
use crate::model::{Fetched, Job, JobState, NewJob, QueueLimits, QueueOverview};
use crate::schedule::{NewSchedule, Schedule};
use crate::store::{Failure, JobFilter, JobPage, Moved, RetentionPolicy, Store, StoreFuture};

/// What a commit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a committed write survives a crash of keel (even `kill -9`); the
    /// last commits before a power loss or kernel crash may be lost. The default.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is flushed to the disk before it is answered, and
    /// survives power loss too; each commit then costs an fsync.
    Full,
}

/// The embedded job store.
pub struct SqliteStore {
    ops: mpsc::Sender<Box<dyn Op>>,
    /// Queue limits; used only by operations on the writer thread, so never contended.
    limiter: Arc<Mutex<Limiter>>,
    /// Dropped with the store, which ends the checkpoint thread.
    _stop_checkpoints: mpsc::Sender<()>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path, durability: Durability, clock: Clock) -> Result<Self, QueueError> {
        let conn = Connection::open(path)?;
        let synchronous = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
        ))?;
        configure(&conn)?;
        migrate(&conn)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(schedules::SCHEMA)?;
        // Checkpoints (copying the WAL back into the database file) run on a thread of their
        // own, so a commit never waits for one: on the writer they put milliseconds on the
        // latency of whichever operations shared that commit.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let checkpoints = Connection::open(path)?;
        checkpoints.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
        ))?;
        let (stop_checkpoints, stopped) = mpsc::channel::<()>();
        let restart = Arc::new(AtomicBool::new(false));
        let restart_wanted = restart.clone();
        std::thread::Builder::new()
            .name("keel-queue-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoints, &stopped, &restart_wanted))
            .map_err(|e| QueueError::Store(format!("cannot start the checkpoint thread: {e}")))?;
        let (ops, queue) = mpsc::channel::<Box<dyn Op>>();
        std::thread::Builder::new()
            .name("keel-queue-writer".into())
            .spawn(move || write_loop(&conn, &queue, &clock, &restart))
            .map_err(|e| QueueError::Store(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            ops,
            limiter: Arc::default(),
            _stop_checkpoints: stop_checkpoints,
        })
    }

    /// Runs `work` on the writer thread, in the next batch, in a savepoint of its own: all of
    /// its writes or none.
    fn run<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, u64) -> Result<T, QueueError> + Send + 'static,
    {
        self.submit(true, work)
    }

    /// Runs `work` on the writer thread, in the next batch, without a savepoint: for work that
    /// writes with one statement, or whose writes each stand on their own.
    fn run_single<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, u64) -> Result<T, QueueError> + Send + 'static,
    {
        self.submit(false, work)
    }

    fn submit<T, F>(&self, atomic: bool, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, u64) -> Result<T, QueueError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let sent = self.ops.send(Box::new(Pending {
            work: Some(work),
            atomic,
            outcome: None,
            reply,
        }));
        Box::pin(async move {
            sent.map_err(|_| QueueError::Store("the writer thread has stopped".into()))?;
            answer
                .await
                .map_err(|_| QueueError::Store("the writer thread has stopped".into()))?
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A number in [0, 1) for backoff jitter.
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

impl Store for SqliteStore {
    fn add<'a>(&'a self, queue: &'a str, jobs: Vec<NewJob>) -> StoreFuture<'a, Vec<String>> {
        let validated = jobs
            .iter()
            .enumerate()
            .try_for_each(|(i, job)| job.validate(&format!("jobs[{i}]")));
        if let Err(e) = validated {
            return Box::pin(async move { Err(e) });
        }
        let queue = queue.to_owned();
        self.run(move |conn, now| add_jobs(conn, now, &queue, jobs))
    }

    fn fetch<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        max: usize,
        lease: Duration,
    ) -> StoreFuture<'a, Vec<Fetched>> {
        let (queue, worker) = (queue.to_owned(), worker.to_owned());
        let limiter = self.limiter.clone();
        self.run_single(move |conn, now| {
            let mut limiter = lock(&limiter);
            fetch_jobs(conn, &mut limiter, now, &queue, &worker, max, ms(lease))
        })
    }

    fn set_limits<'a>(&'a self, queue: &'a str, limits: QueueLimits) -> StoreFuture<'a, ()> {
        let (queue, limiter) = (queue.to_owned(), self.limiter.clone());
        self.run_single(move |conn, now| {
            // Starts still inside the longest window count against the new limits.
            let since = now.saturating_sub(Limiter::window_ms(&limits));
            let history: Vec<(u64, Option<String>)> = conn
                .prepare_cached(
                    "SELECT started_at, grp FROM jobs WHERE queue = ?1 AND started_at > ?2",
                )?
                .query_map(params![queue, since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            lock(&limiter).set(&queue, limits, history);
            Ok(())
        })
    }

    fn complete<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        result: Value,
    ) -> StoreFuture<'a, Moved> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run_single(move |conn, now| complete_job(conn, now, &id, &token, &result))
    }

    fn complete_many(
        &self,
        jobs: Vec<(String, String, Value)>,
    ) -> StoreFuture<'_, Vec<Result<Moved, QueueError>>> {
        self.run_single(move |conn, now| {
            Ok(jobs
                .iter()
                .map(|(id, token, result)| complete_job(conn, now, id, token, result))
                .collect())
        })
    }

    fn fail<'a>(&'a self, id: &'a str, token: &'a str, failure: Failure) -> StoreFuture<'a, Moved> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run_single(move |conn, now| fail_job(conn, now, &id, &token, &failure))
    }

    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, u64> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run(move |conn, now| {
            let job = leased(conn, &id, &token, now)?;
            if job.cancel_requested {
                return Err(QueueError::conflict(&id, "the job was cancelled"));
            }
            let expires = now.saturating_add(ms(lease));
            conn.prepare_cached("UPDATE jobs SET lease_expires = ?1 WHERE seq = ?2")?
                .execute(params![expires, job.seq])?;
            Ok(expires)
        })
    }

    fn recover_stalled(&self, max_stalls: u32) -> StoreFuture<'_, usize> {
        let limiter = self.limiter.clone();
        self.run(move |conn, now| {
            lock(&limiter).forget_idle(now);
            recover(conn, now, max_stalls)
        })
    }

    fn cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved> {
        let id = id.to_owned();
        self.run(move |conn, now| {
            let job = load_existing(conn, &id)?;
            let moved = |state| Moved {
                queue: job.queue.clone(),
                state,
                ran_ms: None,
            };
            match job.state {
                JobState::Waiting | JobState::Delayed => {
                    conn.prepare_cached(
                        "UPDATE jobs SET state = 'cancelled', finished_at = ?1 WHERE id = ?2",
                    )?
                    .execute(params![now, id])?;
                    Ok(moved(JobState::Cancelled))
                }
                JobState::Active => {
                    conn.prepare_cached("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1")?
                        .execute([&id])?;
                    Ok(moved(JobState::Active))
                }
                done => Ok(moved(done)),
            }
        })
    }

    fn progress<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        progress: u8,
        data: Option<Value>,
    ) -> StoreFuture<'a, Moved> {
        let (id, token) = (id.to_owned(), token.to_owned());
        self.run(move |conn, now| {
            let job = leased(conn, &id, &token, now)?;
            if job.cancel_requested {
                return Err(QueueError::conflict(&id, "the job was cancelled"));
            }
            conn.prepare_cached(
                "UPDATE jobs SET progress = ?1, progress_data = ?2 WHERE seq = ?3",
            )?
            .execute(params![
                progress.min(100),
                data.map(|d| d.to_string()),
                job.seq
            ])?;
            Ok(Moved {
                queue: job.queue,
                state: JobState::Active,
                ran_ms: None,
            })
        })
    }

    fn promote<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved> {
        let id = id.to_owned();
        self.run(move |conn, now| {
            let job = load_existing(conn, &id)?;
            if job.state != JobState::Delayed {
                return Err(QueueError::conflict(
                    &id,
                    format!(
                        "only a delayed job can be promoted; this one is {}",
                        job.state.as_str()
                    ),
                ));
            }
            conn.prepare_cached("UPDATE jobs SET state = 'waiting', run_at = ?1 WHERE id = ?2")?
                .execute(params![now, id])?;
            Ok(Moved {
                queue: job.queue,
                state: JobState::Waiting,
                ran_ms: None,
            })
        })
    }

    fn retry<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved> {
        let id = id.to_owned();
        self.run(move |conn, now| {
            let job = load_existing(conn, &id)?;
            if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
                return Err(QueueError::conflict(
                    &id,
                    format!(
                        "only a failed or cancelled job can be retried; this one is {}",
                        job.state.as_str()
                    ),
                ));
            }
            conn.prepare_cached(&format!("UPDATE jobs SET {AGAIN} WHERE id = ?2"))?
                .execute(params![now, id])?;
            Ok(Moved {
                queue: job.queue,
                state: JobState::Waiting,
                ran_ms: None,
            })
        })
    }

    fn clean<'a>(
        &'a self,
        queue: &'a str,
        state: JobState,
        older_than: Duration,
    ) -> StoreFuture<'a, usize> {
        if !matches!(
            state,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        ) {
            return Box::pin(async move {
                Err(QueueError::invalid(
                    "state",
                    "only completed, failed or cancelled jobs can be cleaned",
                ))
            });
        }
        let queue = queue.to_owned();
        self.run(move |conn, now| {
            let before = now.saturating_sub(ms(older_than));
            Ok(conn
                .prepare_cached(
                    "DELETE FROM jobs WHERE queue = ?1 AND state = ?2 AND finished_at <= ?3",
                )?
                .execute(params![queue, state.as_str(), before])?)
        })
    }

    fn retry_failed<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, usize> {
        let queue = queue.to_owned();
        self.run(move |conn, now| {
            Ok(conn
                .prepare_cached(&format!(
                    "UPDATE jobs SET {AGAIN} WHERE queue = ?2 AND state = 'failed'"
                ))?
                .execute(params![now, queue])?)
        })
    }

    fn prune(&self, policy: RetentionPolicy, limit: usize) -> StoreFuture<'_, usize> {
        self.run(move |conn, now| prune(conn, now, &policy, limit))
    }

    fn set_paused<'a>(&'a self, queue: &'a str, paused: bool) -> StoreFuture<'a, ()> {
        let queue = queue.to_owned();
        self.run(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO queues (name, paused) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
            )?
            .execute(params![queue, paused])?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>> {
        let id = id.to_owned();
        self.run(move |conn, _| load(conn, &id))
    }

    fn list<'a>(
        &'a self,
        queue: &'a str,
        filter: JobFilter,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, JobPage> {
        let (queue, cursor) = (queue.to_owned(), cursor.map(str::to_owned));
        self.run(move |conn, _| list(conn, &queue, &filter, cursor.as_deref(), limit))
    }

    fn overview(&self) -> StoreFuture<'_, Vec<QueueOverview>> {
        self.run(|conn, _| overview(conn))
    }

    fn counts<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>> {
        let queue = queue.to_owned();
        self.run(move |conn, _| {
            let mut counts = BTreeMap::new();
            for (_, state, n) in count_by_state(conn, Some(&queue))? {
                counts.insert(state, n);
            }
            Ok(counts)
        })
    }

    fn put_schedule<'a>(
        &'a self,
        queue: &'a str,
        schedule: NewSchedule,
    ) -> StoreFuture<'a, Schedule> {
        if let Err(e) = schedule.validate() {
            return Box::pin(async move { Err(e) });
        }
        let queue = queue.to_owned();
        self.run_single(move |conn, now| schedules::put(conn, now, &queue, schedule))
    }

    fn schedules<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Vec<Schedule>> {
        let queue = queue.to_owned();
        self.run_single(move |conn, _| schedules::list(conn, &queue))
    }

    fn delete_schedule<'a>(&'a self, queue: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        let (queue, name) = (queue.to_owned(), name.to_owned());
        self.run_single(move |conn, _| schedules::delete(conn, &queue, &name))
    }

    fn fire_schedules(&self) -> StoreFuture<'_, Vec<String>> {
        self.run(schedules::fire)
    }

    fn queue_exists<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, bool> {
        let queue = queue.to_owned();
        self.run_single(move |conn, _| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1) \
                     OR EXISTS (SELECT 1 FROM queues WHERE name = ?1) \
                     OR EXISTS (SELECT 1 FROM schedules WHERE queue = ?1)",
                )?
                .query_row([&queue], |r| r.get(0))?)
        })
    }

    fn delete_queue<'a>(&'a self, queue: &'a str, limit: usize) -> StoreFuture<'a, usize> {
        let queue = queue.to_owned();
        self.run(move |conn, _| {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM jobs WHERE seq IN \
                     (SELECT seq FROM jobs WHERE queue = ?1 LIMIT ?2)",
                )?
                .execute(params![queue, limit as i64])?;
            if deleted < limit {
                conn.prepare_cached("DELETE FROM schedules WHERE queue = ?1")?
                    .execute([&queue])?;
                conn.prepare_cached("DELETE FROM job_groups WHERE queue = ?1")?
                    .execute([&queue])?;
                conn.prepare_cached("DELETE FROM queues WHERE name = ?1")?
                    .execute([&queue])?;
            }
            Ok(deleted)
        })
    }

    fn oldest_waiting<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Option<u64>> {
        let queue = queue.to_owned();
        self.run_single(move |conn, _| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(MAX(created_at, run_at)) FROM jobs \
                     WHERE queue = ?1 AND state = 'waiting'",
                )?
                .query_row([&queue], |r| r.get(0))?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as the first stores had it: no `progress_data`, an index on every state.
    const FIRST_SCHEMA: &str = "
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL,
            name TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
            priority INTEGER NOT NULL, attempts_made INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL, backoff TEXT NOT NULL, unique_key TEXT, grp TEXT,
            created_at INTEGER NOT NULL, run_at INTEGER NOT NULL, started_at INTEGER,
            finished_at INTEGER, progress INTEGER NOT NULL DEFAULT 0, result TEXT,
            errors TEXT NOT NULL DEFAULT '[]', stalls INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0, worker TEXT, token TEXT,
            lease_expires INTEGER);
        CREATE INDEX jobs_ready ON jobs (queue, state, priority, seq);
        CREATE INDEX jobs_due ON jobs (queue, state, run_at);
        CREATE INDEX jobs_leases ON jobs (state, lease_expires);
        CREATE INDEX jobs_finished ON jobs (queue, state, finished_at);";

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn first_stores_are_migrated() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(FIRST_SCHEMA).unwrap();
        for _ in 0..2 {
            // and again: nothing left to do
            migrate(&conn).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
        }
        let progress_data = "SELECT COUNT(*) FROM pragma_table_info('jobs') \
                             WHERE name = 'progress_data'";
        assert_eq!(count(&conn, progress_data), 1);
        let old_indexes = "SELECT COUNT(*) FROM sqlite_schema \
                           WHERE name IN ('jobs_ready', 'jobs_due', 'jobs_leases')";
        assert_eq!(count(&conn, old_indexes), 0);
        let partial = "SELECT COUNT(*) FROM sqlite_schema \
                       WHERE name = 'jobs_finished' AND sql LIKE '%WHERE%'";
        assert_eq!(count(&conn, partial), 1);
    }

    #[test]
    fn hot_statements_use_the_partial_indexes() {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let waiting = plan(
            "SELECT seq FROM jobs WHERE queue = 'q' AND state = 'waiting' \
             ORDER BY priority, rank, seq LIMIT 5",
        );
        assert!(waiting.contains("jobs_next"), "{waiting}");
        let stalled = plan("SELECT seq FROM jobs WHERE state = 'active' AND lease_expires <= 5");
        assert!(stalled.contains("jobs_leased"), "{stalled}");
        let kept = plan(
            "SELECT seq FROM jobs WHERE queue = 'q' AND state = 'completed' \
             AND finished_at IS NOT NULL ORDER BY finished_at DESC",
        );
        assert!(kept.contains("jobs_finished"), "{kept}");
        let counts = plan(&COUNT_BY_STATE.replace("?1", "'q'"));
        for index in ["jobs_next", "jobs_delayed", "jobs_leased", "jobs_finished"] {
            assert!(counts.contains(index), "{counts}");
        }
        assert!(
            !counts.split("; ").any(|step| step == "SCAN jobs"),
            "{counts}"
        );
    }

    #[test]
    fn cached_statements_are_not_recompiled_on_each_use() {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let sql = "SELECT seq FROM jobs WHERE queue = ?1 AND state = 'waiting' \
                   ORDER BY priority, seq LIMIT ?2";
        let mut recompiled = 0;
        for limit in [5, 50, 5] {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            stmt.query_map(params!["q", limit], |_| Ok(()))
                .unwrap()
                .for_each(drop);
            recompiled = stmt.get_status(rusqlite::StatementStatus::RePrepare);
        }
        assert_eq!(recompiled, 0);
    }
}
