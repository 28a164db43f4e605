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

mod limits;
mod schedules;

use keel_core::sync::lock;
use limits::Limiter;

use crate::QueueError;
use crate::model::{Fetched, Job, JobState, NewJob, QueueLimits, QueueOverview};
use crate::schedule::{NewSchedule, Schedule};
use crate::store::{Failure, JobFilter, JobPage, Moved, RetentionPolicy, Store, StoreFuture};

/// The most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    -- The highest turn handed out so far (see `job_groups`).
    rank_floor INTEGER NOT NULL DEFAULT 0
);
-- Fair share: each job gets a turn (`jobs.rank`) when added — its group's next turn, but no
-- earlier than the queue's current one — and ready jobs go by (priority, turn, age). A group
-- that adds 10,000 jobs takes turns 1..10,000; one that adds a job later gets the current
-- turn and runs next. Jobs without a group share the group ''.
CREATE TABLE IF NOT EXISTS job_groups (
    queue TEXT NOT NULL,
    grp TEXT NOT NULL,
    next_rank INTEGER NOT NULL,
    PRIMARY KEY (queue, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    rank INTEGER NOT NULL DEFAULT 0,
    attempts_made INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff TEXT NOT NULL,
    unique_key TEXT,
    grp TEXT,
    created_at INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    progress INTEGER NOT NULL DEFAULT 0,
    progress_data TEXT,
    result TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    stalls INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    token TEXT,
    lease_expires INTEGER,
    timeout_ms INTEGER
);
-- Partial indexes: a job is in the index of its current state only, so a state change
-- touches two indexes (the old state's and the new one's), not every index on `state`.
CREATE INDEX IF NOT EXISTS jobs_next ON jobs (queue, priority, rank, seq) WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS jobs_delayed ON jobs (queue, run_at) WHERE state = 'delayed';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (queue, lease_expires) WHERE lease_expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (queue, state, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs (queue, seq);
CREATE INDEX IF NOT EXISTS jobs_unique ON jobs (queue, unique_key) WHERE unique_key IS NOT NULL;
";

/// One operation on its way to the writer.
trait Op: Send {
    /// Runs the operation inside the batch's transaction, in its own savepoint.
    fn apply(&mut self, conn: &Connection, now: u64);
    /// Answers the caller once the batch is committed (or failed to commit).
    fn finish(self: Box<Self>, commit: Result<(), QueueError>);
}

struct Pending<T, F> {
    work: Option<F>,
    /// Whether the work runs in a savepoint of its own: needed when it writes more than once
    /// and must be all or nothing. A single write statement is atomic by itself, and a
    /// savepoint costs a copy of every page the work touches.
    atomic: bool,
    outcome: Option<Result<T, QueueError>>,
    reply: oneshot::Sender<Result<T, QueueError>>,
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

fn write_loop(
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
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL frames (pages) after which the writer restarts the WAL from its beginning.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is dropped. PASSIVE: it never
/// blocks the writer; what it cannot copy now it copies next time. Under steady writes the
/// WAL is never copied completely at a moment the writer starts, so SQLite never starts it
/// over: past [`WAL_RESTART_FRAMES`] this asks the writer to (see [`write_loop`]).
fn checkpoint_loop(conn: &Connection, stopped: &mpsc::Receiver<()>, restart: &AtomicBool) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
        match frames {
            Ok(frames) if frames >= WAL_RESTART_FRAMES => restart.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpointing the job store's WAL failed"),
        }
    }
}

/// Connection settings for the writer's hot path.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Plans never depend on bound values (every statement names the states its partial
    // indexes cover as literals). Without this, SQLite recompiles a cached statement on each
    // use when a binding might have mattered to its plan, as rusqlite clears the bindings.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Savepoint journals stay in memory.
    conn.execute_batch("PRAGMA temp_store = MEMORY;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Runs a parameterless statement, parsed once per connection.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A number in [0, 1) for backoff jitter.
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

const JOB_COLUMNS: &str = "id, queue, name, payload, state, priority, attempts_made, max_attempts, \
    backoff, unique_key, grp, created_at, run_at, started_at, finished_at, progress, result, errors, \
    stalls, worker, progress_data, timeout_ms";

/// Brings a store written by an earlier keel up to the current schema.
fn migrate(conn: &Connection) -> Result<(), QueueError> {
    let has_jobs: bool = conn
        .prepare("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'")?
        .query_row([], |r| r.get::<_, i64>(0))?
        > 0;
    if !has_jobs {
        return Ok(());
    }
    // Earlier stores indexed every state; the partial indexes of SCHEMA replace them (and
    // `jobs_finished` became partial, so it is rebuilt).
    conn.execute_batch(
        "DROP INDEX IF EXISTS jobs_ready; DROP INDEX IF EXISTS jobs_due; \
         DROP INDEX IF EXISTS jobs_leases; DROP INDEX IF EXISTS jobs_waiting;",
    )?;
    let finished_is_partial: bool = conn
        .prepare("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'jobs_finished' AND sql LIKE '%WHERE%'")?
        .query_row([], |r| r.get::<_, i64>(0))?
        > 0;
    if !finished_is_partial {
        conn.execute_batch("DROP INDEX IF EXISTS jobs_finished")?;
    }
    add_column(conn, "jobs", "progress_data", "TEXT")?;
    add_column(conn, "jobs", "rank", "INTEGER NOT NULL DEFAULT 0")?;
    add_column(conn, "jobs", "timeout_ms", "INTEGER")?;
    add_column(conn, "queues", "rank_floor", "INTEGER NOT NULL DEFAULT 0")?;
    Ok(())
}

/// Adds `column` to `table` unless it is there (or the table is not there yet).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<(), QueueError> {
    let (has_table, has_column): (bool, bool) = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1) > 0, \
         (SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2) > 0",
        [table, column],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if has_table && !has_column {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let json = |i: usize| -> rusqlite::Result<Value> {
        let text: String = row.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    let state: String = row.get(4)?;
    let result: Option<String> = row.get(16)?;
    Ok(Job {
        id: row.get(0)?,
        queue: row.get(1)?,
        name: row.get(2)?,
        payload: json(3)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        priority: row.get(5)?,
        attempts_made: row.get(6)?,
        max_attempts: row.get(7)?,
        backoff: serde_json::from_value(json(8)?).unwrap_or_default(),
        unique_key: row.get(9)?,
        group: row.get(10)?,
        created_at: row.get(11)?,
        run_at: row.get(12)?,
        started_at: row.get(13)?,
        finished_at: row.get(14)?,
        progress: row.get(15)?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        errors: serde_json::from_value(json(17)?).unwrap_or_default(),
        stalls: row.get(18)?,
        worker: row.get(19)?,
        progress_data: row
            .get::<_, Option<String>>(20)?
            .and_then(|d| serde_json::from_str(&d).ok()),
        timeout_ms: row.get(21)?,
    })
}

/// The assignments that put a finished job back to waiting (at `?1`) with a fresh set of
/// attempts, keeping its error history; shared by retry and retry-failed.
const AGAIN: &str = "state = 'waiting', run_at = ?1, attempts_made = 0, stalls = 0, \
    finished_at = NULL, cancel_requested = 0, progress = 0, progress_data = NULL";

/// Job `id`, or [`QueueError::NoJob`].
fn load_existing(conn: &Connection, id: &str) -> Result<Job, QueueError> {
    load(conn, id)?.ok_or_else(|| QueueError::NoJob(id.to_owned()))
}

fn load(conn: &Connection, id: &str) -> Result<Option<Job>, QueueError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?)
}

/// The active job `id` if `token` holds its lease at `now`; otherwise why not.
struct Leased {
    seq: i64,
    started_at: Option<u64>,
    queue: String,
    attempts_made: u32,
    max_attempts: u32,
    backoff: String,
    errors: String,
    cancel_requested: bool,
}

/// A fresh lease token for the job at row `seq`: the row (so reports find the job without the
/// id index) and 128 random bits. Tokens tell leases apart; they are not credentials (any
/// `worker` may fetch any job).
fn new_token(seq: i64) -> String {
    thread_local! {
        static STATE: std::cell::Cell<u64> =
            std::cell::Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
    }
    // splitmix64: seeded once per thread from the system's randomness.
    let next = || {
        STATE.with(|state| {
            let mut z = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            state.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    format!("{seq:x}.{:016x}{:016x}", next(), next())
}

/// The row a token names, if it is one of [`new_token`]'s.
fn token_row(token: &str) -> Option<i64> {
    let (seq, _) = token.split_once('.')?;
    i64::from_str_radix(seq, 16).ok()
}

fn leased(conn: &Connection, id: &str, token: &str, now: u64) -> Result<Leased, QueueError> {
    const COLUMNS: &str = "state, token, lease_expires, attempts_made, max_attempts, backoff, \
        errors, cancel_requested, queue, seq, started_at";
    // By the row the token names (one lookup); by id when that finds nothing, to say why.
    let by_row = match token_row(token) {
        Some(seq) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE seq = ?1 AND id = ?2"
            ))?
            .query_row(params![seq, id], leased_row)
            .optional()?,
        None => None,
    };
    let row = match by_row {
        Some(row) => Some(row),
        None => conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
            .query_row([id], leased_row)
            .optional()?,
    };
    let Some((state, held_by, expires, leased)) = row else {
        return Err(QueueError::NoJob(id.to_owned()));
    };
    if state != JobState::Active.as_str() {
        return Err(QueueError::conflict(
            id,
            format!("the job is {state}, not active"),
        ));
    }
    if held_by.as_deref() != Some(token) {
        return Err(QueueError::conflict(
            id,
            "the lease token does not match: the job is leased to another attempt",
        ));
    }
    if expires.is_none_or(|at| at <= now) {
        return Err(QueueError::conflict(id, "the lease has expired"));
    }
    Ok(leased)
}

type LeasedRow = (String, Option<String>, Option<u64>, Leased);

fn leased_row(r: &Row<'_>) -> rusqlite::Result<LeasedRow> {
    Ok((
        r.get::<_, String>(0)?,
        r.get::<_, Option<String>>(1)?,
        r.get::<_, Option<u64>>(2)?,
        Leased {
            seq: r.get(9)?,
            started_at: r.get(10)?,
            queue: r.get(8)?,
            attempts_made: r.get(3)?,
            max_attempts: r.get(4)?,
            backoff: r.get(5)?,
            errors: r.get(6)?,
            cancel_requested: r.get(7)?,
        },
    ))
}

fn push_error(errors: &str, error: &str) -> String {
    let mut list: Vec<String> = serde_json::from_str(errors).unwrap_or_default();
    list.push(error.to_owned());
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

fn add_jobs(
    conn: &Connection,
    now: u64,
    queue: &str,
    jobs: Vec<NewJob>,
) -> Result<Vec<String>, QueueError> {
    let mut find_unique = conn.prepare_cached(
        "SELECT id FROM jobs WHERE queue = ?1 AND unique_key = ?2 \
         AND state IN ('waiting', 'delayed', 'active') LIMIT 1",
    )?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO jobs (id, queue, name, payload, state, priority, max_attempts, backoff, \
         unique_key, grp, created_at, run_at, rank, timeout_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    let mut turns = Turns::load(conn, queue)?;
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(key) = &job.options.unique_key {
            let existing: Option<String> = find_unique
                .query_row(params![queue, key], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                ids.push(id);
                continue;
            }
        }
        let id = uuid::Uuid::now_v7().to_string();
        let run_at = now.saturating_add(job.options.delay_ms);
        let state = if job.options.delay_ms > 0 {
            JobState::Delayed
        } else {
            JobState::Waiting
        };
        let backoff = serde_json::to_string(&job.options.backoff)
            .map_err(|e| QueueError::Store(e.to_string()))?;
        insert.execute(params![
            id,
            queue,
            job.name,
            job.payload.to_string(),
            state.as_str(),
            job.options.priority,
            job.options.attempts,
            backoff,
            job.options.unique_key,
            job.options.group,
            now,
            run_at,
            turns.next(conn, job.options.group.as_deref())?,
            job.options.timeout_ms,
        ])?;
        ids.push(id);
    }
    turns.save(conn)?;
    Ok(ids)
}

/// The turns handed to the jobs of one add (see `job_groups` in the schema).
struct Turns<'q> {
    queue: &'q str,
    floor: i64,
    /// Each group's next turn, as read or advanced by this add.
    next: HashMap<String, i64>,
}

impl<'q> Turns<'q> {
    fn load(conn: &Connection, queue: &'q str) -> Result<Self, QueueError> {
        let floor = conn
            .prepare_cached("SELECT rank_floor FROM queues WHERE name = ?1")?
            .query_row([queue], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        Ok(Self {
            queue,
            floor,
            next: HashMap::new(),
        })
    }

    fn next(&mut self, conn: &Connection, group: Option<&str>) -> Result<i64, QueueError> {
        let group = group.unwrap_or("");
        let next = match self.next.get_mut(group) {
            Some(next) => next,
            None => {
                let stored: i64 = conn
                    .prepare_cached(
                        "SELECT next_rank FROM job_groups WHERE queue = ?1 AND grp = ?2",
                    )?
                    .query_row([self.queue, group], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0);
                self.next.entry(group.to_owned()).or_insert(stored)
            }
        };
        let turn = (*next).max(self.floor);
        *next = turn + 1;
        Ok(turn)
    }

    fn save(self, conn: &Connection) -> Result<(), QueueError> {
        let mut save = conn.prepare_cached(
            "INSERT INTO job_groups (queue, grp, next_rank) VALUES (?1, ?2, ?3) \
             ON CONFLICT (queue, grp) DO UPDATE SET next_rank = excluded.next_rank",
        )?;
        for (group, next) in &self.next {
            save.execute(params![self.queue, group, next])?;
        }
        Ok(())
    }
}

fn fetch_jobs(
    conn: &Connection,
    limiter: &mut Limiter,
    now: u64,
    queue: &str,
    worker: &str,
    max: usize,
    lease: u64,
) -> Result<Vec<Fetched>, QueueError> {
    let paused: bool = conn
        .prepare_cached("SELECT paused FROM queues WHERE name = ?1")?
        .query_row([queue], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    if paused || max == 0 {
        return Ok(Vec::new());
    }
    let mut limits = limiter.get(queue);
    let (budget, look) = match limits.as_deref_mut() {
        None => (max, max),
        Some(limits) => {
            let active: u64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND lease_expires IS NOT NULL",
                )?
                .query_row([queue], |r| r.get(0))?;
            let budget = limits.budget(now, max, active);
            // Jobs of groups at their limit are passed over, so look further than needed.
            let look = if limits.limits_groups() {
                budget * 4 + 64
            } else {
                budget
            };
            (budget, look)
        }
    };
    if budget == 0 {
        return Ok(Vec::new());
    }
    conn.prepare_cached(
        "UPDATE jobs SET state = 'waiting' WHERE queue = ?1 AND state = 'delayed' AND run_at <= ?2",
    )?
    .execute(params![queue, now])?;
    // Read the next jobs, then lease each by row id with a fresh random token (cheaper than
    // one `UPDATE … RETURNING`, which SQLite runs through a temporary table).
    let expires = now.saturating_add(lease);
    let mut next = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS}, seq, rank FROM jobs WHERE queue = ?1 AND state = 'waiting' \
         ORDER BY priority, rank, seq LIMIT ?2"
    ))?;
    let candidates = next.query_map(params![queue, look as i64], |row| {
        Ok((
            job_from_row(row)?,
            row.get::<_, i64>(22)?,
            row.get::<_, i64>(23)?,
        ))
    })?;
    let mut take = conn.prepare_cached(
        "UPDATE jobs SET state = 'active', attempts_made = attempts_made + 1, started_at = ?1, \
         worker = ?2, token = ?3, lease_expires = ?4 WHERE seq = ?5",
    )?;
    let mut fetched = Vec::with_capacity(budget);
    let mut floor = None;
    for candidate in candidates {
        if fetched.len() == budget {
            break;
        }
        let (mut job, seq, rank) = candidate?;
        if let Some(limits) = limits.as_deref_mut() {
            if !limits.admits(now, job.group.as_deref()) {
                continue;
            }
            limits.started(now, job.group.as_deref());
        }
        let token = new_token(seq);
        take.execute(params![now, worker, token, expires, seq])?;
        floor = floor.max(Some(rank));
        job.state = JobState::Active;
        job.attempts_made += 1;
        job.started_at = Some(now);
        job.worker = Some(worker.to_owned());
        fetched.push(Fetched {
            job,
            token,
            lease_expires_at: expires,
        });
    }
    if let Some(floor) = floor {
        conn.prepare_cached(
            "INSERT INTO queues (name, rank_floor) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET rank_floor = max(rank_floor, excluded.rank_floor)",
        )?
        .execute(params![queue, floor])?;
    }
    Ok(fetched)
}

fn complete_job(
    conn: &Connection,
    now: u64,
    id: &str,
    token: &str,
    result: &Value,
) -> Result<Moved, QueueError> {
    // Look up, check the lease, then update by row id: cheaper than one `UPDATE … RETURNING`,
    // which SQLite runs through a temporary table.
    let job = leased(conn, id, token, now)?;
    let state = if job.cancel_requested {
        JobState::Cancelled
    } else {
        JobState::Completed
    };
    let result = (!result.is_null()).then(|| result.to_string());
    conn.prepare_cached(
        "UPDATE jobs SET state = ?1, finished_at = ?2, result = ?3, progress = 100, \
         worker = NULL, token = NULL, lease_expires = NULL WHERE seq = ?4",
    )?
    .execute(params![state.as_str(), now, result, job.seq])?;
    Ok(Moved {
        queue: job.queue,
        state,
        ran_ms: job.started_at.map(|at| now.saturating_sub(at)),
    })
}

fn fail_job(
    conn: &Connection,
    now: u64,
    id: &str,
    token: &str,
    failure: &Failure,
) -> Result<Moved, QueueError> {
    let job = leased(conn, id, token, now)?;
    let errors = push_error(&job.errors, &failure.error);
    let retry = failure.retry && job.attempts_made < job.max_attempts;
    let (state, run_at, finished_at) = if job.cancel_requested {
        (JobState::Cancelled, now, Some(now))
    } else if retry {
        let backoff: crate::model::Backoff = serde_json::from_str(&job.backoff).unwrap_or_default();
        let wait = match failure.retry_after {
            Some(after) => ms(after),
            None => ms(backoff.wait(job.attempts_made, random_unit())),
        };
        (JobState::Delayed, now.saturating_add(wait), None)
    } else {
        (JobState::Failed, now, Some(now))
    };
    conn.prepare_cached(
        "UPDATE jobs SET state = ?1, run_at = ?2, finished_at = ?3, errors = ?4, worker = NULL, \
         token = NULL, lease_expires = NULL WHERE seq = ?5",
    )?
    .execute(params![
        state.as_str(),
        run_at,
        finished_at,
        errors,
        job.seq
    ])?;
    Ok(Moved {
        queue: job.queue,
        state,
        ran_ms: job.started_at.map(|at| now.saturating_sub(at)),
    })
}

/// An active job whose lease has expired.
struct Stalled {
    seq: i64,
    worker: Option<String>,
    attempts_made: u32,
    max_attempts: u32,
    stalls: u32,
    errors: String,
    cancel_requested: bool,
}

fn recover(conn: &Connection, now: u64, max_stalls: u32) -> Result<usize, QueueError> {
    let stalled: Vec<Stalled> = conn
        .prepare_cached(
            "SELECT seq, worker, attempts_made, max_attempts, stalls, errors, cancel_requested \
             FROM jobs WHERE state = 'active' AND lease_expires <= ?1",
        )?
        .query_map([now], |r| {
            Ok(Stalled {
                seq: r.get(0)?,
                worker: r.get(1)?,
                attempts_made: r.get(2)?,
                max_attempts: r.get(3)?,
                stalls: r.get(4)?,
                errors: r.get(5)?,
                cancel_requested: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    for job in &stalled {
        let stalls = job.stalls + 1;
        let note = format!(
            "stalled: the lease of worker {} expired without a report (stall {stalls})",
            job.worker.as_deref().unwrap_or("?")
        );
        let (state, finished_at) = if job.cancel_requested {
            (JobState::Cancelled, Some(now))
        } else if stalls > max_stalls || job.attempts_made >= job.max_attempts {
            (JobState::Failed, Some(now))
        } else {
            (JobState::Waiting, None)
        };
        conn.prepare_cached(
            "UPDATE jobs SET state = ?1, run_at = ?2, finished_at = ?3, stalls = ?4, errors = ?5, \
             worker = NULL, token = NULL, lease_expires = NULL WHERE seq = ?6",
        )?
        .execute(params![
            state.as_str(),
            now,
            finished_at,
            stalls,
            push_error(&job.errors, &note),
            job.seq
        ])?;
    }
    time_out(conn, now)?;
    Ok(stalled.len())
}

/// Fails the attempts that have run longer than their job's timeout, leases renewed or not:
/// retried after the backoff while attempts remain.
fn time_out(conn: &Connection, now: u64) -> Result<(), QueueError> {
    let overdue: Vec<(i64, u32, u32, String, String, bool, u64)> = conn
        .prepare_cached(
            "SELECT seq, attempts_made, max_attempts, backoff, errors, cancel_requested, \
             timeout_ms FROM jobs WHERE lease_expires IS NOT NULL AND timeout_ms IS NOT NULL \
             AND started_at + timeout_ms <= ?1",
        )?
        .query_map([now], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (seq, attempts_made, max_attempts, backoff, errors, cancel_requested, timeout) in overdue {
        let note = format!(
            "timed out: the attempt ran longer than the job's timeout ({})",
            keel_core::HumanDuration::from_millis(timeout)
        );
        let (state, run_at, finished_at) = if cancel_requested {
            (JobState::Cancelled, now, Some(now))
        } else if attempts_made < max_attempts {
            let backoff: crate::model::Backoff = serde_json::from_str(&backoff).unwrap_or_default();
            let wait = ms(backoff.wait(attempts_made, random_unit()));
            (JobState::Delayed, now.saturating_add(wait), None)
        } else {
            (JobState::Failed, now, Some(now))
        };
        conn.prepare_cached(
            "UPDATE jobs SET state = ?1, run_at = ?2, finished_at = ?3, errors = ?4, worker = NULL, \
             token = NULL, lease_expires = NULL WHERE seq = ?5",
        )?
        .execute(params![
            state.as_str(),
            run_at,
            finished_at,
            push_error(&errors, &note),
            seq
        ])?;
    }
    Ok(())
}

fn prune(
    conn: &Connection,
    now: u64,
    policy: &RetentionPolicy,
    limit: usize,
) -> Result<usize, QueueError> {
    // The queues with finished jobs, one index seek each (not a scan of every job).
    let queues: Vec<String> = conn
        .prepare_cached(
            "WITH RECURSIVE q(name) AS ( \
                 SELECT MIN(queue) FROM jobs WHERE finished_at IS NOT NULL \
                 UNION ALL \
                 SELECT (SELECT MIN(queue) FROM jobs WHERE finished_at IS NOT NULL AND queue > q.name) \
                 FROM q WHERE q.name IS NOT NULL) \
             SELECT name FROM q WHERE name IS NOT NULL",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut aged = conn.prepare_cached(
        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE queue = ?1 AND state = ?2 \
         AND finished_at < ?3 LIMIT ?4)",
    )?;
    let mut over = conn.prepare_cached(
        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE queue = ?1 AND state = ?2 \
         AND finished_at IS NOT NULL ORDER BY finished_at DESC, seq DESC LIMIT ?3 OFFSET ?4)",
    )?;
    let mut deleted = 0;
    for queue in &queues {
        let retention = policy.for_queue(queue);
        for (state, keep) in [
            (JobState::Completed, retention.completed),
            (JobState::Failed, retention.failed),
            (JobState::Cancelled, retention.failed),
        ] {
            if let Some(age) = retention.max_age {
                let before = now.saturating_sub(ms(age));
                let room = limit.saturating_sub(deleted);
                deleted += aged.execute(params![queue, state.as_str(), before, room as i64])?;
            }
            let room = limit.saturating_sub(deleted);
            if room == 0 {
                return Ok(deleted);
            }
            deleted += over.execute(params![queue, state.as_str(), room as i64, keep])?;
        }
    }
    Ok(deleted)
}

fn overview(conn: &Connection) -> Result<Vec<QueueOverview>, QueueError> {
    let mut all: BTreeMap<String, QueueOverview> = BTreeMap::new();
    fn entry<'m>(
        all: &'m mut BTreeMap<String, QueueOverview>,
        name: &str,
    ) -> &'m mut QueueOverview {
        all.entry(name.to_owned()).or_insert_with(|| QueueOverview {
            name: name.to_owned(),
            paused: false,
            counts: BTreeMap::new(),
        })
    }
    for (queue, state, n) in count_by_state(conn, None)? {
        entry(&mut all, &queue).counts.insert(state, n);
    }
    let mut paused = conn.prepare_cached("SELECT name, paused FROM queues WHERE paused = 1")?;
    for row in paused.query_map([], |r| r.get::<_, String>(0))? {
        entry(&mut all, &row?).paused = true;
    }
    Ok(all.into_values().collect())
}

/// Jobs per queue (every queue, or only `?1`) and state, each state counted from its own
/// partial index rather than by reading every row.
const COUNT_BY_STATE: &str = "SELECT queue, 'waiting', COUNT(*) FROM jobs \
         WHERE state = 'waiting' AND (?1 IS NULL OR queue = ?1) GROUP BY queue \
         UNION ALL SELECT queue, 'delayed', COUNT(*) FROM jobs \
         WHERE state = 'delayed' AND (?1 IS NULL OR queue = ?1) GROUP BY queue \
         UNION ALL SELECT queue, 'active', COUNT(*) FROM jobs \
         WHERE lease_expires IS NOT NULL AND (?1 IS NULL OR queue = ?1) GROUP BY queue \
         UNION ALL SELECT queue, state, COUNT(*) FROM jobs \
         WHERE finished_at IS NOT NULL AND (?1 IS NULL OR queue = ?1) GROUP BY queue, state";

/// Jobs per queue (every queue, or only `queue`) and state.
fn count_by_state(
    conn: &Connection,
    queue: Option<&str>,
) -> Result<Vec<(String, String, u64)>, QueueError> {
    let mut counts = conn.prepare_cached(COUNT_BY_STATE)?;
    let rows = counts.query_map([queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `text` with LIKE's wildcards escaped (by `\`).
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn list(
    conn: &Connection,
    queue: &str,
    filter: &JobFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<JobPage, QueueError> {
    let before: i64 = match cursor {
        None => i64::MAX,
        Some(c) => c
            .parse()
            .map_err(|_| QueueError::invalid("cursor", "not a cursor this API returned"))?,
    };
    let pattern = filter
        .search
        .as_ref()
        .map(|s| format!("%{}%", like_literal(s)));
    let mut query = conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS}, seq FROM jobs WHERE queue = ?1 AND seq < ?2 \
         AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR name = ?4) \
         AND (?5 IS NULL OR grp = ?5) \
         AND (?6 IS NULL OR id = ?7 OR name LIKE ?6 ESCAPE '\\' OR payload LIKE ?6 ESCAPE '\\') \
         ORDER BY seq DESC LIMIT ?8"
    ))?;
    let rows = query.query_map(
        params![
            queue,
            before,
            filter.state.map(JobState::as_str),
            filter.name,
            filter.group,
            pattern,
            filter.search,
            (limit + 1) as i64
        ],
        |row| Ok((job_from_row(row)?, row.get::<_, i64>(22)?)),
    )?;
    let mut jobs = Vec::with_capacity(limit + 1);
    for row in rows {
        jobs.push(row?);
    }
    let next_cursor = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|(_, seq)| seq.to_string())
    } else {
        None
    };
    Ok(JobPage {
        jobs: jobs.into_iter().map(|(job, _)| job).collect(),
        next_cursor,
    })
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
