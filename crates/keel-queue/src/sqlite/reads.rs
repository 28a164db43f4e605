//! Read-only operations: the overview, counts and listings.

use super::*;

pub(super) fn overview(conn: &Connection) -> Result<Vec<QueueOverview>, QueueError> {
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
pub(super) const COUNT_BY_STATE: &str = "SELECT queue, 'waiting', COUNT(*) FROM jobs \
         WHERE state = 'waiting' AND (?1 IS NULL OR queue = ?1) GROUP BY queue \
         UNION ALL SELECT queue, 'delayed', COUNT(*) FROM jobs \
         WHERE state = 'delayed' AND (?1 IS NULL OR queue = ?1) GROUP BY queue \
         UNION ALL SELECT queue, 'active', COUNT(*) FROM jobs \
         WHERE lease_expires IS NOT NULL AND (?1 IS NULL OR queue = ?1) GROUP BY queue \
         UNION ALL SELECT queue, state, COUNT(*) FROM jobs \
         WHERE finished_at IS NOT NULL AND (?1 IS NULL OR queue = ?1) GROUP BY queue, state";

/// Jobs per queue (every queue, or only `queue`) and state.
pub(super) fn count_by_state(
    conn: &Connection,
    queue: Option<&str>,
) -> Result<Vec<(String, String, u64)>, QueueError> {
    let mut counts = conn.prepare_cached(COUNT_BY_STATE)?;
    let rows = counts.query_map([queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `text` with LIKE's wildcards escaped (by `\`).
pub(super) fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

pub(super) fn list(
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
