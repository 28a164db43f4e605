//! Reading the scripts' replies: jobs from their hashes, and the `{'ok', …}` / `{'nojob'}` /
//! `{'conflict', why}` outcomes.

use std::collections::HashMap;

use keel_queue::{Job, JobState, Moved, QueueError};
use redis::Value;
use serde_json::Value as Json;

/// A reply's text, if it is a string or a number.
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// A reply's integer (integers, and strings holding one).
pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other).and_then(|t| number(&t)),
    }
}

/// A number as Redis or Lua wrote it (`1700000000000`, or `1.7e+12` from a float).
fn number(text: &str) -> Option<i64> {
    text.parse::<i64>()
        .ok()
        .or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
}

/// An array reply's elements (nil and non-arrays: none).
pub(super) fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// A hash from `HGETALL` (a flat list of fields and values, or a map).
pub(super) fn hash(value: Value) -> HashMap<String, String> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        other => {
            let items = items(other);
            items
                .chunks_exact(2)
                .filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?)))
                .collect()
        }
    }
}

/// What a script said about one job: the rest of an `{'ok', …}` reply, or the refusal.
pub(super) fn outcome(id: &str, reply: Value) -> Result<Vec<Value>, QueueError> {
    let mut items = items(reply).into_iter();
    let status = items.next().as_ref().and_then(text).unwrap_or_default();
    match status.as_str() {
        "ok" => Ok(items.collect()),
        "nojob" => Err(QueueError::NoJob(id.to_owned())),
        "conflict" => Err(QueueError::Conflict {
            id: id.to_owned(),
            reason: items.next().as_ref().and_then(text).unwrap_or_default(),
        }),
        other => Err(QueueError::Store(format!(
            "unexpected reply from the Redis job store: {other:?}"
        ))),
    }
}

/// What the COMPLETE script said of job `id` of `queue`: the job's lease (`token|expiry|
/// started|worker`) when it completed, `cancelled ` and the lease when it was cancelled
/// instead, or why it was refused (`nojob`, or `conflict ` and the reason).
pub(super) fn completion(
    id: &str,
    queue: &str,
    reply: &Value,
    now: u64,
) -> Result<Moved, QueueError> {
    let reply = text_ref(reply).unwrap_or_default();
    if reply == "nojob" {
        return Err(QueueError::NoJob(id.to_owned()));
    }
    if let Some(reason) = reply.strip_prefix("conflict ") {
        return Err(QueueError::Conflict {
            id: id.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let (state, lease) = match reply.strip_prefix("cancelled ") {
        Some(lease) => (JobState::Cancelled, lease),
        None => (JobState::Completed, reply),
    };
    let started = lease
        .split('|')
        .nth(2)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            QueueError::Store(format!(
                "unexpected completion reply from the Redis job store: {reply:?}"
            ))
        })?;
    Ok(Moved {
        queue: queue.to_owned(),
        state,
        ran_ms: Some(now.saturating_sub(started)),
    })
}

/// A state a script named.
pub(super) fn state(value: Option<&Value>) -> Result<JobState, QueueError> {
    let name = value.and_then(text).unwrap_or_default();
    JobState::parse(&name)
        .ok_or_else(|| QueueError::Store(format!("unknown job state {name:?} in Redis")))
}

/// A job's order column (`o`): priority and add order.
fn order(o: &str) -> Option<(i32, u64)> {
    let priority = i64::from_str_radix(o.get(0..8)?, 16).ok()? - 2_147_483_648;
    let seq = u64::from_str_radix(o.get(20..32)?, 16).ok()?;
    Some((i32::try_from(priority).ok()?, seq))
}

/// A job's `d` column: created, attempts allowed, order, backoff (JSON; empty for the
/// default).
fn described(d: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = d.splitn(4, '|');
    Some((parts.next()?, parts.next()?, parts.next()?, parts.next()?))
}

/// The add order of the job with columns `fields` (the cursor of listings).
pub(super) fn seq(fields: &HashMap<String, String>) -> Option<u64> {
    let (_, _, o, _) = described(fields.get("d")?)?;
    order(o).map(|(_, seq)| seq)
}

/// Job `id` from its columns; `None` when it has none (no such job).
pub(super) fn job(id: &str, fields: &HashMap<String, String>) -> Result<Option<Job>, QueueError> {
    if fields.is_empty() {
        return Ok(None);
    }
    job_from(id, |field| fields.get(field).map(String::as_str)).map(Some)
}

/// A reply's text, borrowed: a bulk string that is UTF-8, or a simple string.
pub(super) fn text_ref(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Job `id` from its columns as `get` reads them (by column name), without copying them into
/// a map first: a fetch decodes every job it leases.
pub(super) fn job_from<'a>(
    id: &str,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<Job, QueueError> {
    let corrupt = |field: &str| QueueError::Store(format!("job {id}: unreadable field {field}"));
    let num = |field: &str| get(field).and_then(number);
    let json = |field: &str| -> Result<Option<Json>, QueueError> {
        get(field)
            .map(|text| serde_json::from_str(text).map_err(|_| corrupt(field)))
            .transpose()
    };
    let queue = super::queue_of(id).ok_or_else(|| corrupt("id"))?;
    let state = get("st")
        .and_then(JobState::parse)
        .ok_or_else(|| corrupt("st"))?;
    let (created, max_attempts, o, backoff) =
        get("d").and_then(described).ok_or_else(|| corrupt("d"))?;
    let (priority, _) = order(o).ok_or_else(|| corrupt("d"))?;
    let created_at = number(created).map(unsigned).ok_or_else(|| corrupt("d"))?;
    let max_attempts = number(max_attempts)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| corrupt("d"))?;
    // The last lease is `token|expiry|started|worker`; its worker holds the job while active.
    let lease: Vec<&str> = get("ls")
        .map(|l| l.splitn(4, '|').collect())
        .unwrap_or_default();
    let worker = lease
        .get(3)
        .filter(|_| state == JobState::Active)
        .map(|w| (*w).to_owned());
    let started_at = lease.get(2).and_then(|s| number(s)).map(unsigned);
    // A completed job's progress is not written: it is 100.
    let progress = match num("pg") {
        Some(p) => p.clamp(0, 100),
        None if state == JobState::Completed => 100,
        None => 0,
    };
    Ok(Job {
        id: id.to_owned(),
        queue: queue.to_owned(),
        name: get("n").unwrap_or_default().to_owned(),
        payload: json("p")?.unwrap_or(Json::Null),
        state,
        priority,
        attempts_made: u32::try_from(num("am").unwrap_or(i64::from(!lease.is_empty())))
            .unwrap_or(0),
        max_attempts,
        backoff: serde_json::from_str(backoff).unwrap_or_default(),
        unique_key: get("uk").map(str::to_owned),
        group: get("g").map(str::to_owned),
        created_at,
        run_at: num("ra").map_or(created_at, unsigned),
        started_at,
        finished_at: num("fa").map(unsigned),
        progress: u8::try_from(progress).unwrap_or(0),
        result: json("rs")?,
        errors: get("er")
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default(),
        stalls: u32::try_from(num("sl").unwrap_or(0)).unwrap_or(0),
        worker,
        progress_data: json("pd")?,
        timeout_ms: num("to").map(unsigned),
    })
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_job_is_read_from_its_columns() {
        let id = "0192d5c4-0000-7000-8000-000000000001~mail";
        let pairs = [
            ("n", "send"),
            ("p", r#"{"to":"ada@example.com"}"#),
            ("st", "active"),
            (
                "d",
                r#"1700000000000|3|7ffffffb000000000002000000000011|{"type":"fixed","delay_ms":500,"jitter":0.0}"#,
            ),
            ("ls", "abc|1700000030000|1700000000002|w|1"),
            ("ra", "1.700000000001e+12"),
            ("er", r#"["boom \/ bang"]"#),
            ("pg", "40"),
        ];
        let flat = |extra: &[(&str, &str)]| {
            Value::Array(
                pairs
                    .iter()
                    .chain(extra)
                    .flat_map(|(k, v)| [bulk(k), bulk(v)])
                    .collect(),
            )
        };
        let read = job(id, &hash(flat(&[]))).unwrap().unwrap();
        let reset = job(id, &hash(flat(&[("am", "0")]))).unwrap().unwrap();
        assert!(
            job(id, &HashMap::new()).unwrap().is_none(),
            "no hash, no job"
        );
        let job = read;
        assert_eq!(job.queue, "mail");
        assert_eq!(job.state, JobState::Active);
        assert_eq!(job.priority, -5);
        assert_eq!(job.run_at, 1_700_000_000_001, "a float Lua wrote");
        assert_eq!(job.errors, ["boom / bang"], "cjson escapes slashes");
        assert_eq!(job.backoff.delay_ms, 500);
        assert_eq!(job.progress, 40);
        assert_eq!(job.finished_at, None);
        assert_eq!(
            job.worker.as_deref(),
            Some("w|1"),
            "a worker may hold the separator"
        );
        let d = [(
            "d".to_owned(),
            "1|3|7ffffffb000000000002000000000011|".to_owned(),
        )];
        assert_eq!(seq(&d.into()), Some(17));
        assert_eq!(job.stalls, 0, "left out at its default");
        assert_eq!(job.attempts_made, 1, "a first attempt's count is its lease");
        assert_eq!(
            reset.attempts_made, 0,
            "a count written wins over the lease"
        );
    }

    #[test]
    fn completions_are_a_lease_or_a_refusal() {
        let lease = "0123456789abcdef0123456789abcdef|31000|1000|w1";
        let moved = completion("j~q", "q", &bulk(lease), 1250).unwrap();
        assert_eq!(
            (moved.queue.as_str(), moved.state, moved.ran_ms),
            ("q", JobState::Completed, Some(250))
        );
        let cancelled = completion("j~q", "q", &bulk(&format!("cancelled {lease}")), 1100);
        assert_eq!(
            cancelled.map(|m| (m.state, m.ran_ms)),
            Ok((JobState::Cancelled, Some(100)))
        );
        assert_eq!(
            completion("j~q", "q", &bulk("nojob"), 1),
            Err(QueueError::NoJob("j~q".into()))
        );
        assert_eq!(
            completion("j~q", "q", &bulk("conflict the lease has expired"), 1),
            Err(QueueError::Conflict {
                id: "j~q".into(),
                reason: "the lease has expired".into()
            })
        );
        assert!(completion("j~q", "q", &bulk("exploded"), 1).is_err());
    }

    #[test]
    fn outcomes_name_the_refusal() {
        let conflict = Value::Array(vec![bulk("conflict"), bulk("the lease has expired")]);
        assert_eq!(
            outcome("j", conflict),
            Err(QueueError::Conflict {
                id: "j".into(),
                reason: "the lease has expired".into()
            })
        );
        let nojob = Value::Array(vec![bulk("nojob")]);
        assert_eq!(outcome("j", nojob), Err(QueueError::NoJob("j".into())));
        let ok = Value::Array(vec![bulk("ok"), bulk("completed"), Value::Int(7)]);
        let rest = outcome("j", ok).unwrap();
        assert_eq!(state(rest.first()).unwrap(), JobState::Completed);
        assert_eq!(int(&rest[1]), Some(7));
    }
}
