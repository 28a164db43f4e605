//! Repeatable jobs: a schedule adds one job to its queue at each tick of a cron expression
//! (in a time zone) or of a fixed interval. The store fires due schedules and moves each to
//! its next tick in one transaction, so a tick yields exactly one job — also across restarts,
//! and ticks missed while keel was down yield one job, not one per tick.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::QueueError;

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Repeat {
    /// A cron expression (5 fields, or 6 with seconds first) read in an IANA time zone.
    Cron {
        /// E.g. `*/5 * * * *`.
        expr: String,
        /// E.g. `Europe/Stockholm`; `UTC` by default.
        timezone: String,
    },
    /// Every `every_ms` milliseconds, counted from the schedule's creation.
    Every {
        /// The interval.
        every_ms: u64,
    },
}

impl Repeat {
    /// Checks the expression and time zone; `field` prefixes the error.
    pub fn validate(&self) -> Result<(), QueueError> {
        match self {
            Self::Cron { expr, timezone } => {
                Cron::from_str(expr)
                    .map_err(|e| QueueError::invalid("cron", format!("{expr:?}: {e}")))?;
                timezone.parse::<chrono_tz::Tz>().map_err(|_| {
                    QueueError::invalid(
                        "timezone",
                        format!("{timezone:?} is not an IANA time zone such as Europe/Berlin"),
                    )
                })?;
                Ok(())
            }
            Self::Every { every_ms } if *every_ms < 1_000 => {
                Err(QueueError::invalid("every", "must be at least 1s"))
            }
            Self::Every { .. } => Ok(()),
        }
    }

    /// The first tick strictly after `after` (Unix ms); `anchor` is when an interval started.
    /// `None` when a cron expression never matches again.
    pub fn next_after(&self, after: u64, anchor: u64) -> Option<u64> {
        match self {
            Self::Every { every_ms } => {
                let every = (*every_ms).max(1);
                let passed = after.saturating_sub(anchor) / every + 1;
                Some(anchor.saturating_add(passed.saturating_mul(every)))
            }
            Self::Cron { expr, timezone } => {
                let cron = Cron::from_str(expr).ok()?;
                let tz: chrono_tz::Tz = timezone.parse().ok()?;
                let after = i64::try_from(after).ok()?;
                let from = Utc.timestamp_millis_opt(after).single()?.with_timezone(&tz);
                let next = cron.find_next_occurrence(&from, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The queue its jobs go to.
    pub queue: String,
    /// Its name, unique in the queue; also the name of the jobs it adds.
    pub name: String,
    /// When it ticks.
    pub repeat: Repeat,
    /// Each job's payload.
    pub payload: Value,
    /// Attempts of each job.
    pub attempts: u32,
    /// When it was created (Unix ms; intervals count from here).
    pub created_at: u64,
    /// Its next tick (Unix ms); `None` when it will not tick again.
    pub next_run_at: Option<u64>,
    /// Its last tick that added a job.
    pub last_run_at: Option<u64>,
}

/// A schedule to create or replace.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    /// Its name, unique in the queue (1–128 characters).
    pub name: String,
    /// When it ticks.
    pub repeat: Repeat,
    /// Each job's payload.
    pub payload: Value,
    /// Attempts of each job (at least 1).
    pub attempts: u32,
}

impl NewSchedule {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(QueueError::invalid("name", "must be 1–128 characters"));
        }
        if self.attempts == 0 {
            return Err(QueueError::invalid("attempts", "must be at least 1"));
        }
        self.repeat.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;
    /// 2026-09-21 14:13:20 UTC.
    const T: u64 = 1_790_000_000_000;

    #[test]
    fn intervals_tick_from_their_anchor() {
        let every = Repeat::Every { every_ms: MINUTE };
        assert_eq!(every.next_after(T, T), Some(T + MINUTE));
        assert_eq!(every.next_after(T + MINUTE - 1, T), Some(T + MINUTE));
        assert_eq!(every.next_after(T + MINUTE, T), Some(T + 2 * MINUTE));
        // Many ticks missed: the next one after now, not the first missed.
        assert_eq!(
            every.next_after(T + 10 * MINUTE + 5, T),
            Some(T + 11 * MINUTE)
        );
    }

    #[test]
    fn cron_ticks_in_its_time_zone() {
        let five = Repeat::Cron {
            expr: "*/5 * * * *".into(),
            timezone: "UTC".into(),
        };
        assert_eq!(five.next_after(T, T), Some(T + 100_000), "14:15:00");
        // 09:00 every day in New York is 13:00 UTC in September (EDT).
        let nine = Repeat::Cron {
            expr: "0 9 * * *".into(),
            timezone: "America/New_York".into(),
        };
        let next = nine.next_after(T, T).unwrap();
        let at = Utc.timestamp_millis_opt(next as i64).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-09-22T13:00:00+00:00");
    }

    #[test]
    fn bad_expressions_and_zones_name_the_field() {
        let field = |r: Repeat| match r.validate() {
            Err(QueueError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let cron = |expr: &str, tz: &str| Repeat::Cron {
            expr: expr.into(),
            timezone: tz.into(),
        };
        assert_eq!(field(cron("61 * * * *", "UTC")), "cron");
        assert_eq!(field(cron("* * *", "UTC")), "cron");
        assert_eq!(field(cron("* * * * *", "Mars/Olympus")), "timezone");
        assert_eq!(field(Repeat::Every { every_ms: 10 }), "every");
        assert!(cron("0 9 * * 1-5", "Europe/Berlin").validate().is_ok());
    }
}
