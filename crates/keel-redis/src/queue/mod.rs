//! [`RedisStore`]: the job queue's store in Redis, so workers on every keel instance share
//! the same queues. It passes the same conformance suite as the embedded SQLite store.
//!
//! Every state change is one Lua script (see `scripts`), atomic in Redis, loaded once and
//! called by SHA1 (loaded again when Redis answers NOSCRIPT, as after a restart). All keys of
//! a queue carry the hash tag `{<queue>}`, so a script's keys share one Cluster slot; a job's
//! id ends in `~<queue>`, so an operation on a job by id finds its queue's keys without a
//! lookup. Two sets outside the queues (`<prefix>queues`, `<prefix>schedule-queues`) name the
//! queues for the overview, recovery, pruning and schedules; they are updated next to the
//! scripts, in the same round trip.
//!
//! Time is the store's clock (the caller's), passed to every script: instances should keep
//! their clocks in step (NTP), as leases and delays compare times written by different
//! instances.

mod added;
mod decode;
mod jobs;
mod schedules;
mod scripts;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use keel_core::Clock;
use keel_queue::{
    Backoff, Failure, Fetched, Job, JobFilter, JobPage, JobState, Moved, NewJob, NewSchedule,
    QueueError, QueueLimits, QueueOverview, Queues, RetentionPolicy, Schedule, Store, StoreFuture,
};
use redis::Value;
use serde_json::Value as Json;

use crate::{Redis, RedisError};
use decode::{int, items, outcome, text};
use scripts::Lua;

/// Most jobs a script examines or moves in one step of a long operation (clean, retry of
/// every failed job, a listing): Redis runs one script at a time, so long work is cut into
/// steps that let other commands in between.
const STEP: usize = 1_000;

/// Time a bulk add may take per job, beyond the command timeout: adding 10,000 jobs in one
/// script keeps Redis busy for a good part of a second.
const ADD_TIME_PER_JOB: Duration = Duration::from_micros(50);

/// The longest lease or retry wait kept (ten years), so times stay exact in Lua's numbers.
const LONGEST_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// The job store in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
    clock: Clock,
    queues: String,
    schedule_queues: String,
    /// Where adds are announced (see `added`), and this store's name in the announcements.
    added_channel: String,
    instance: String,
}

/// The queue a job id names (`<uuid>~<queue>`), if it is one of this store's ids.
fn queue_of(id: &str) -> Option<&str> {
    let (_, queue) = id.split_once('~')?;
    Queues::validate_queue(queue).ok()?;
    Some(queue)
}

fn store_error(e: RedisError) -> QueueError {
    if e.is_outage() {
        QueueError::Unavailable(format!("Redis: {e}"))
    } else {
        QueueError::Store(format!("Redis: {e}"))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .min(LONGEST_MS)
}

/// The backoff of jobs added without their own (not stored with each job), as JSON.
fn default_backoff() -> String {
    serde_json::to_string(&Backoff::default()).unwrap_or_default()
}

/// A number in [0, 1) for backoff jitter.
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 11) as f64 / (1u64 << 53) as f64
}

impl RedisStore {
    /// A store on `redis` (its key prefix applies), reading time from `clock`.
    pub fn new(redis: Redis, clock: Clock) -> Self {
        Self {
            queues: redis.key("queues"),
            schedule_queues: redis.key("schedule-queues"),
            added_channel: redis.key("queue:added"),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            redis,
            clock,
        }
    }

    fn now(&self) -> u64 {
        self.clock.unix_ms()
    }

    /// `queue`'s meta hash, the key every script on the queue is called with.
    fn meta(&self, queue: &str) -> String {
        self.redis.key(&format!("q:{{{queue}}}:m"))
    }

    /// One of `queue`'s other keys.
    fn queue_key(&self, queue: &str, suffix: &str) -> String {
        self.redis.key(&format!("q:{{{queue}}}:{suffix}"))
    }

    /// The round trip of `script`, which adds jobs to `queue`: the queue joins the set of
    /// queues, and the other instances hear of the add.
    fn adding(&self, queue: &str, script: redis::Cmd) -> crate::Pipeline {
        let mut pipe = crate::pipe();
        pipe.cmd("SADD").arg(&self.queues).arg(queue).ignore();
        pipe.add_command(script);
        pipe.cmd("PUBLISH")
            .arg(&self.added_channel)
            .arg(added::message(&self.instance, queue))
            .ignore();
        pipe
    }

    /// Runs `pipe`; when Redis no longer knows the scripts (NOSCRIPT), loads them and runs it
    /// again.
    async fn run<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &crate::Pipeline,
    ) -> Result<T, QueueError> {
        self.run_within(pipe, self.redis.command_timeout()).await
    }

    /// [`Self::run`] for work that may take up to `timeout`.
    async fn run_within<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &crate::Pipeline,
        timeout: Duration,
    ) -> Result<T, QueueError> {
        self.redis
            .pipeline_loading(pipe, timeout, &scripts::LOADS)
            .await
            .map_err(store_error)
    }

    /// Runs one script call.
    async fn call(&self, cmd: redis::Cmd) -> Result<Value, QueueError> {
        let mut pipe = crate::pipe();
        pipe.add_command(cmd);
        let (value,): (Value,) = self.run(&pipe).await?;
        Ok(value)
    }

    /// Runs `script` on the queue of job `id` with `args`, returning what it said of the job.
    async fn on_job(
        &self,
        script: &Lua,
        id: &str,
        args: impl FnOnce(&mut redis::Cmd),
    ) -> Result<(String, Vec<Value>), QueueError> {
        let queue = queue_of(id).ok_or_else(|| QueueError::NoJob(id.to_owned()))?;
        let mut cmd = script.call(&self.meta(queue));
        cmd.arg(self.now()).arg(id);
        args(&mut cmd);
        let reply = self.call(cmd).await?;
        Ok((queue.to_owned(), outcome(id, reply)?))
    }

    async fn moved(
        &self,
        script: &Lua,
        id: &str,
        args: impl FnOnce(&mut redis::Cmd),
    ) -> Result<Moved, QueueError> {
        let (queue, rest) = self.on_job(script, id, args).await?;
        Ok(Moved {
            queue,
            state: decode::state(rest.first())?,
            ran_ms: rest
                .get(1)
                .and_then(int)
                .and_then(|n| u64::try_from(n).ok()),
        })
    }
}
