//! Schedules in the SQLite store: one row per schedule, fired by the writer thread (see
//! [`crate::schedule`]).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::add_jobs;
use crate::QueueError;
use crate::model::{JobOptions, NewJob};
use crate::schedule::{NewSchedule, Schedule};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schedules (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    repeat TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    next_run_at INTEGER,
    last_run_at INTEGER,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_run_at) WHERE next_run_at IS NOT NULL;
";

const COLUMNS: &str =
    "queue, name, repeat, payload, attempts, created_at, next_run_at, last_run_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let json_err = |i, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let repeat: String = row.get(2)?;
    let payload: String = row.get(3)?;
    Ok(Schedule {
        queue: row.get(0)?,
        name: row.get(1)?,
        repeat: serde_json::from_str(&repeat).map_err(|e| json_err(2, e))?,
        payload: serde_json::from_str(&payload).map_err(|e| json_err(3, e))?,
        attempts: row.get(4)?,
        created_at: row.get(5)?,
        next_run_at: row.get(6)?,
        last_run_at: row.get(7)?,
    })
}

fn load(conn: &Connection, queue: &str, name: &str) -> Result<Option<Schedule>, QueueError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE queue = ?1 AND name = ?2"
        ))?
        .query_row([queue, name], from_row)
        .optional()?)
}

/// Creates or replaces a schedule. A replacement with the same timing keeps its ticks;
/// new timing starts counting from now.
pub(super) fn put(
    conn: &Connection,
    now: u64,
    queue: &str,
    new: NewSchedule,
) -> Result<Schedule, QueueError> {
    let kept = load(conn, queue, &new.name)?.filter(|old| old.repeat == new.repeat);
    let (created_at, next_run_at, last_run_at) = match kept {
        Some(old) => (old.created_at, old.next_run_at, old.last_run_at),
        None => (now, new.repeat.next_after(now, now), None),
    };
    let schedule = Schedule {
        queue: queue.to_owned(),
        name: new.name,
        repeat: new.repeat,
        payload: new.payload,
        attempts: new.attempts,
        created_at,
        next_run_at,
        last_run_at,
    };
    let repeat =
        serde_json::to_string(&schedule.repeat).map_err(|e| QueueError::Store(e.to_string()))?;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))?
    .execute(params![
        schedule.queue,
        schedule.name,
        repeat,
        schedule.payload.to_string(),
        schedule.attempts,
        schedule.created_at,
        schedule.next_run_at,
        schedule.last_run_at,
    ])?;
    Ok(schedule)
}

/// `queue`'s schedules by name.
pub(super) fn list(conn: &Connection, queue: &str) -> Result<Vec<Schedule>, QueueError> {
    let mut query = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE queue = ?1 ORDER BY name"
    ))?;
    let rows = query.query_map([queue], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes a schedule; whether there was one.
pub(super) fn delete(conn: &Connection, queue: &str, name: &str) -> Result<bool, QueueError> {
    Ok(conn
        .prepare_cached("DELETE FROM schedules WHERE queue = ?1 AND name = ?2")?
        .execute([queue, name])?
        > 0)
}

/// Adds one job for every schedule whose tick has come and moves it to its first tick after
/// `now`. Returns the queues that got jobs.
pub(super) fn fire(conn: &Connection, now: u64) -> Result<Vec<String>, QueueError> {
    let due: Vec<Schedule> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_run_at <= ?1"
        ))?
        .query_map([now], from_row)?
        .collect::<Result<_, _>>()?;
    let mut advance = conn.prepare_cached(
        "UPDATE schedules SET next_run_at = ?1, last_run_at = ?2 WHERE queue = ?3 AND name = ?4",
    )?;
    let mut queues = Vec::new();
    for schedule in due {
        let job = NewJob {
            name: schedule.name.clone(),
            payload: schedule.payload.clone(),
            options: JobOptions {
                attempts: schedule.attempts,
                ..JobOptions::default()
            },
        };
        add_jobs(conn, now, &schedule.queue, vec![job])?;
        let next = schedule.repeat.next_after(now, schedule.created_at);
        advance.execute(params![next, now, schedule.queue, schedule.name])?;
        if !queues.contains(&schedule.queue) {
            queues.push(schedule.queue);
        }
    }
    Ok(queues)
}
