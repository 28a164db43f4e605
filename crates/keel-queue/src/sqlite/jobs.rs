//! The job operations as the writer thread runs them: add, fetch, complete, fail, recover,
//! prune, and the lease checks they share.

use super::*;

pub(super) const JOB_COLUMNS: &str = "id, queue, name, payload, state, priority, attempts_made, max_attempts, \
    backoff, unique_key, grp, created_at, run_at, started_at, finished_at, progress, result, errors, \
    stalls, worker, progress_data, timeout_ms";

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
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
pub(super) const AGAIN: &str = "state = 'waiting', run_at = ?1, attempts_made = 0, stalls = 0, \
    finished_at = NULL, cancel_requested = 0, progress = 0, progress_data = NULL";

/// Job `id`, or [`QueueError::NoJob`].
pub(super) fn load_existing(conn: &Connection, id: &str) -> Result<Job, QueueError> {
    load(conn, id)?.ok_or_else(|| QueueError::NoJob(id.to_owned()))
}

pub(super) fn load(conn: &Connection, id: &str) -> Result<Option<Job>, QueueError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row([id], job_from_row)
        .optional()?)
}

/// The active job `id` if `token` holds its lease at `now`; otherwise why not.
pub(super) struct Leased {
    pub(super) seq: i64,
    pub(super) started_at: Option<u64>,
    pub(super) queue: String,
    pub(super) attempts_made: u32,
    pub(super) max_attempts: u32,
    pub(super) backoff: String,
    pub(super) errors: String,
    pub(super) cancel_requested: bool,
}

/// A fresh lease token for the job at row `seq`: the row (so reports find the job without the
/// id index) and 128 random bits. Tokens tell leases apart; they are not credentials (any
/// `worker` may fetch any job).
pub(super) fn new_token(seq: i64) -> String {
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
pub(super) fn token_row(token: &str) -> Option<i64> {
    let (seq, _) = token.split_once('.')?;
    i64::from_str_radix(seq, 16).ok()
}

pub(super) fn leased(
    conn: &Connection,
    id: &str,
    token: &str,
    now: u64,
) -> Result<Leased, QueueError> {
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

pub(super) type LeasedRow = (String, Option<String>, Option<u64>, Leased);

pub(super) fn leased_row(r: &Row<'_>) -> rusqlite::Result<LeasedRow> {
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

pub(super) fn push_error(errors: &str, error: &str) -> String {
    let mut list: Vec<String> = serde_json::from_str(errors).unwrap_or_default();
    list.push(error.to_owned());
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
}

pub(super) fn add_jobs(
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
pub(super) struct Turns<'q> {
    pub(super) queue: &'q str,
    pub(super) floor: i64,
    /// Each group's next turn, as read or advanced by this add.
    pub(super) next: HashMap<String, i64>,
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

pub(super) fn fetch_jobs(
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

pub(super) fn complete_job(
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

pub(super) fn fail_job(
    conn: &Connection,
    now: u64,
    id: &str,
    token: &str,
    failure: &Failure,
) -> Result<Moved, QueueError> {
    let job = leased(conn, id, token, now)?;
    let state = end_failed_attempt(
        conn,
        now,
        job.seq,
        &FailedAttempt {
            cancel_requested: job.cancel_requested,
            retry: failure.retry && job.attempts_made < job.max_attempts,
            backoff: &job.backoff,
            attempts_made: job.attempts_made,
            retry_after: failure.retry_after,
        },
        &push_error(&job.errors, &failure.error),
    )?;
    Ok(Moved {
        queue: job.queue,
        state,
        ran_ms: job.started_at.map(|at| now.saturating_sub(at)),
    })
}

/// An active job whose lease has expired.
pub(super) struct Stalled {
    pub(super) seq: i64,
    pub(super) worker: Option<String>,
    pub(super) attempts_made: u32,
    pub(super) max_attempts: u32,
    pub(super) stalls: u32,
    pub(super) errors: String,
    pub(super) cancel_requested: bool,
}

pub(super) fn recover(conn: &Connection, now: u64, max_stalls: u32) -> Result<usize, QueueError> {
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
pub(super) fn time_out(conn: &Connection, now: u64) -> Result<(), QueueError> {
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
        let attempt = FailedAttempt {
            cancel_requested,
            retry: attempts_made < max_attempts,
            backoff: &backoff,
            attempts_made,
            retry_after: None,
        };
        end_failed_attempt(conn, now, seq, &attempt, &push_error(&errors, &note))?;
    }
    Ok(())
}

/// A failed attempt, as [`end_failed_attempt`] needs it.
pub(super) struct FailedAttempt<'a> {
    pub(super) cancel_requested: bool,
    /// Whether another attempt follows (asked for, and attempts remain).
    pub(super) retry: bool,
    /// The job's backoff (JSON).
    pub(super) backoff: &'a str,
    pub(super) attempts_made: u32,
    /// Wait this long instead of the backoff.
    pub(super) retry_after: Option<Duration>,
}

/// Ends a failed attempt of the active job at row `seq`, with its `errors` (JSON) updated:
/// cancelled if that was asked for, else delayed for a retry, else failed. Its new state.
pub(super) fn end_failed_attempt(
    conn: &Connection,
    now: u64,
    seq: i64,
    attempt: &FailedAttempt<'_>,
    errors: &str,
) -> Result<JobState, QueueError> {
    let (state, run_at, finished_at) = if attempt.cancel_requested {
        (JobState::Cancelled, now, Some(now))
    } else if attempt.retry {
        let wait = match attempt.retry_after {
            Some(after) => ms(after),
            None => {
                let backoff: crate::model::Backoff =
                    serde_json::from_str(attempt.backoff).unwrap_or_default();
                ms(backoff.wait(attempt.attempts_made, random_unit()))
            }
        };
        (JobState::Delayed, now.saturating_add(wait), None)
    } else {
        (JobState::Failed, now, Some(now))
    };
    conn.prepare_cached(
        "UPDATE jobs SET state = ?1, run_at = ?2, finished_at = ?3, errors = ?4, worker = NULL, \
         token = NULL, lease_expires = NULL WHERE seq = ?5",
    )?
    .execute(params![state.as_str(), run_at, finished_at, errors, seq])?;
    Ok(state)
}

pub(super) fn prune(
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
