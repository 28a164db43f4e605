//! The store's schema, its migrations from earlier versions, and connection settings.

use super::*;

pub(super) const SCHEMA: &str = "
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

/// Connection settings for the writer's hot path.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Plans never depend on bound values (every statement names the states its partial
    // indexes cover as literals). Without this, SQLite recompiles a cached statement on each
    // use when a binding might have mattered to its plan, as rusqlite clears the bindings.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Savepoint journals stay in memory.
    conn.execute_batch("PRAGMA temp_store = MEMORY;")?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Brings a store written by an earlier keel up to the current schema.
pub(super) fn migrate(conn: &Connection) -> Result<(), QueueError> {
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
pub(super) fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    decl: &str,
) -> Result<(), QueueError> {
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
