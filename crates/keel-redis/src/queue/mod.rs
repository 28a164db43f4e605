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

mod decode;
mod scripts;

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

/// The longest lease or retry wait kept (ten years), so times stay exact in Lua's numbers.
const LONGEST_MS: u64 = 10 * 365 * 24 * 3_600_000;

/// The job store in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
    clock: Clock,
    queues: String,
    schedule_queues: String,
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

    /// Runs `pipe`; when Redis no longer knows the scripts (NOSCRIPT), loads them and runs it
    /// again.
    async fn run<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, QueueError> {
        match self.redis.pipeline(pipe).await {
            Err(RedisError::Server(e)) if e.starts_with("NOSCRIPT") => {
                let mut load = redis::pipe();
                for script in scripts::all() {
                    load.add_command(script.load()).ignore();
                }
                let () = self.redis.pipeline(&load).await.map_err(store_error)?;
                self.redis.pipeline(pipe).await.map_err(store_error)
            }
            other => other.map_err(store_error),
        }
    }

    /// Runs one script call.
    async fn call(&self, cmd: redis::Cmd) -> Result<Value, QueueError> {
        let mut pipe = redis::pipe();
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

    /// Every queue the store knows of (with jobs, paused, or resumed), by name.
    async fn known_queues(&self, set: &str) -> Result<Vec<String>, QueueError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(set);
        let (mut queues,): (Vec<String>,) = self.run(&pipe).await?;
        queues.sort();
        Ok(queues)
    }

    /// Job counts by state of each of `queues`, and whether each is paused.
    async fn queue_counts(
        &self,
        queues: &[String],
    ) -> Result<Vec<(bool, BTreeMap<String, u64>)>, QueueError> {
        // The state's sorted set and list (waiting jobs are in both).
        const SETS: [(&str, JobState); 7] = [
            ("w", JobState::Waiting),
            ("wl", JobState::Waiting),
            ("d", JobState::Delayed),
            ("a", JobState::Active),
            ("c", JobState::Completed),
            ("f", JobState::Failed),
            ("x", JobState::Cancelled),
        ];
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.cmd("HGET").arg(self.meta(queue)).arg("paused");
            for (suffix, _) in SETS {
                let count = if matches!(suffix, "wl" | "c" | "f" | "x") {
                    "LLEN"
                } else {
                    "ZCARD"
                };
                pipe.cmd(count).arg(self.queue_key(queue, suffix));
            }
        }
        let replies: Vec<Value> = self.run(&pipe).await?;
        Ok(replies
            .chunks(1 + SETS.len())
            .map(|chunk| {
                let paused = chunk.first().and_then(text).as_deref() == Some("1");
                let mut counts = BTreeMap::new();
                for ((_, state), n) in SETS.iter().zip(&chunk[1..]) {
                    let n = int(n).and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
                    if n > 0 {
                        *counts.entry(state.as_str().to_owned()).or_insert(0) += n;
                    }
                }
                (paused, counts)
            })
            .collect())
    }

    /// Adds `jobs` to `queue` with `script` (ADD, or FIRE_SCHEDULE with its own arguments
    /// first): the 10 arguments of each job.
    fn job_args(cmd: &mut redis::Cmd, queue: &str, jobs: &[NewJob]) -> Result<(), QueueError> {
        for job in jobs {
            // The default backoff is not stored with each job.
            let backoff = if job.options.backoff == Backoff::default() {
                String::new()
            } else {
                serde_json::to_string(&job.options.backoff)
                    .map_err(|e| QueueError::Store(e.to_string()))?
            };
            cmd.arg(format!("{}~{queue}", uuid::Uuid::now_v7()))
                .arg(&job.name)
                .arg(job.payload.to_string())
                .arg(job.options.priority)
                .arg(job.options.delay_ms.min(LONGEST_MS))
                .arg(job.options.attempts)
                .arg(backoff)
                .arg(job.options.unique_key.as_deref().unwrap_or(""))
                .arg(job.options.group.as_deref().unwrap_or(""))
                .arg(
                    job.options
                        .timeout_ms
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                );
        }
        Ok(())
    }

    async fn add_jobs(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<String>, QueueError> {
        Queues::validate_queue(queue)?;
        for (i, job) in jobs.iter().enumerate() {
            job.validate(&format!("jobs[{i}]"))?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = scripts::ADD.call(&self.meta(queue));
        cmd.arg(self.now()).arg(jobs.len());
        Self::job_args(&mut cmd, queue, &jobs)?;
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(&self.queues).arg(queue).ignore();
        pipe.add_command(cmd);
        let (ids,): (Vec<String>,) = self.run(&pipe).await?;
        Ok(ids)
    }

    async fn fetch_jobs(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Fetched>, QueueError> {
        if max == 0 || Queues::validate_queue(queue).is_err() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let expires = now.saturating_add(ms(lease));
        // One token for the jobs of this fetch: it tells this lease of each from its others.
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut cmd = scripts::FETCH.call(&self.meta(queue));
        cmd.arg(now).arg(worker).arg(max).arg(expires).arg(&token);
        let reply = self.call(cmd).await?;
        // Members of the waiting set (order, then id) with the attempts made, in pairs.
        let mut leased = Vec::new();
        let mut replies = items(reply).into_iter();
        while let (Some(member), Some(made)) = (replies.next(), replies.next()) {
            let member = text(&member).unwrap_or_default();
            if let Some(id) = member.get(32..) {
                leased.push((id.to_owned(), text(&made).unwrap_or_default()));
            }
        }
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        // The jobs' other columns, read with a plain pipeline.
        const READ: [&str; 11] = ["n", "p", "d", "uk", "g", "to", "ra", "pg", "pd", "er", "sl"];
        let mut pipe = redis::pipe();
        for column in READ {
            let cmd = pipe
                .cmd("HMGET")
                .arg(self.queue_key(queue, &format!("h:{column}")));
            for (id, _) in &leased {
                cmd.arg(id);
            }
        }
        let columns: Vec<Vec<Option<String>>> = self.run(&pipe).await?;
        let lease = format!("{token}|{expires}|{now}|{worker}");
        let mut fetched = Vec::with_capacity(leased.len());
        for (k, (id, made)) in leased.into_iter().enumerate() {
            let mut fields: HashMap<String, String> = READ
                .iter()
                .zip(&columns)
                .filter_map(|(name, values)| Some(((*name).to_owned(), values.get(k)?.clone()?)))
                .collect();
            // Deleted between the lease and the read (the queue was drained): not handed out.
            if !fields.contains_key("d") {
                continue;
            }
            fields.insert("st".to_owned(), JobState::Active.as_str().to_owned());
            fields.insert("am".to_owned(), made);
            fields.insert("ls".to_owned(), lease.clone());
            let Some(job) = decode::job(&id, &fields)? else {
                continue;
            };
            fetched.push(Fetched {
                job,
                token: token.clone(),
                lease_expires_at: expires,
            });
        }
        Ok(fetched)
    }

    async fn complete_jobs(
        &self,
        jobs: Vec<(String, String, Json)>,
    ) -> Result<Vec<Result<Moved, QueueError>>, QueueError> {
        let now = self.now();
        // One script call per queue, all in one round trip.
        let mut by_queue: Vec<(String, Vec<usize>)> = Vec::new();
        let mut outcomes: Vec<Option<Result<Moved, QueueError>>> = vec![None; jobs.len()];
        for (i, (id, _, _)) in jobs.iter().enumerate() {
            match queue_of(id) {
                None => outcomes[i] = Some(Err(QueueError::NoJob(id.clone()))),
                Some(queue) => match by_queue.iter_mut().find(|(q, _)| q == queue) {
                    Some((_, members)) => members.push(i),
                    None => by_queue.push((queue.to_owned(), vec![i])),
                },
            }
        }
        if !by_queue.is_empty() {
            let mut pipe = redis::pipe();
            for (queue, members) in &by_queue {
                let mut cmd = scripts::COMPLETE.call(&self.meta(queue));
                cmd.arg(now);
                for &i in members {
                    let (id, token, result) = &jobs[i];
                    let result = if result.is_null() {
                        String::new()
                    } else {
                        result.to_string()
                    };
                    cmd.arg(id).arg(token).arg(result);
                }
                pipe.add_command(cmd);
            }
            let replies: Vec<Value> = self.run(&pipe).await?;
            for ((queue, members), reply) in by_queue.iter().zip(replies) {
                for (&i, one) in members.iter().zip(items(reply)) {
                    let moved = outcome(&jobs[i].0, one).and_then(|rest| {
                        Ok(Moved {
                            queue: queue.clone(),
                            state: decode::state(rest.first())?,
                            ran_ms: rest
                                .get(1)
                                .and_then(int)
                                .and_then(|n| u64::try_from(n).ok()),
                        })
                    });
                    outcomes[i] = Some(moved);
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(QueueError::Store("no reply for a job".into()))))
            .collect())
    }

    /// Calls `script` on `queue` with `args` until it answers fewer than [`STEP`]; the sum.
    async fn in_steps(
        &self,
        script: &Lua,
        queue: &str,
        args: impl Fn(&mut redis::Cmd),
    ) -> Result<usize, QueueError> {
        let mut total = 0;
        loop {
            let mut cmd = script.call(&self.meta(queue));
            args(&mut cmd);
            let n = int(&self.call(cmd).await?).unwrap_or(0);
            let n = usize::try_from(n).unwrap_or(0);
            total += n;
            if n < STEP {
                return Ok(total);
            }
        }
    }

    async fn recover(&self, max_stalls: u32) -> Result<usize, QueueError> {
        let mut queues = self.known_queues(&self.queues).await?;
        let mut recovered = 0;
        while !queues.is_empty() {
            let mut pipe = redis::pipe();
            for queue in &queues {
                let mut cmd = scripts::RECOVER.call(&self.meta(queue));
                cmd.arg(self.now())
                    .arg(max_stalls)
                    .arg(random_unit())
                    .arg(default_backoff());
                pipe.add_command(cmd);
            }
            let replies: Vec<Value> = self.run(&pipe).await?;
            let mut again = Vec::new();
            for (queue, reply) in queues.into_iter().zip(replies) {
                let counts: Vec<usize> = items(reply)
                    .iter()
                    .map(|n| int(n).and_then(|n| usize::try_from(n).ok()).unwrap_or(0))
                    .collect();
                recovered += counts.first().copied().unwrap_or(0);
                if counts.iter().any(|n| *n >= STEP) {
                    again.push(queue);
                }
            }
            queues = again;
        }
        Ok(recovered)
    }

    async fn prune_queues(
        &self,
        policy: RetentionPolicy,
        limit: usize,
    ) -> Result<usize, QueueError> {
        let now = self.now();
        let mut deleted = 0;
        for queue in self.known_queues(&self.queues).await? {
            let room = limit.saturating_sub(deleted);
            if room == 0 {
                break;
            }
            let retention = policy.for_queue(&queue);
            let oldest_kept = retention
                .max_age
                .map(|age| now.saturating_sub(ms(age)).to_string())
                .unwrap_or_default();
            let mut cmd = scripts::DELETE_FINISHED.call(&self.meta(&queue));
            cmd.arg("prune")
                .arg(room)
                .arg(retention.completed)
                .arg(retention.failed)
                .arg(oldest_kept);
            let n = int(&self.call(cmd).await?).unwrap_or(0);
            deleted += usize::try_from(n).unwrap_or(0);
        }
        Ok(deleted)
    }

    async fn list_jobs(
        &self,
        queue: &str,
        filter: JobFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        // A cursor is the add order (12 hex digits) of the last job of the page before.
        let mut before = match cursor {
            None => String::new(),
            Some(c) if c.len() == 12 && c.bytes().all(|b| b.is_ascii_hexdigit()) => c.to_owned(),
            Some(_) => {
                return Err(QueueError::Invalid {
                    field: "cursor".into(),
                    detail: "not a cursor this API returned".into(),
                });
            }
        };
        let want = limit + 1;
        let mut jobs: Vec<(Job, String)> = Vec::with_capacity(want);
        loop {
            let mut cmd = scripts::LIST.call(&self.meta(queue));
            cmd.arg(&before)
                .arg(want - jobs.len())
                .arg(STEP)
                .arg(filter.state.map(JobState::as_str).unwrap_or(""))
                .arg(filter.name.as_deref().unwrap_or(""))
                .arg(filter.group.as_deref().unwrap_or(""))
                .arg(filter.search.as_deref().unwrap_or(""));
            let mut reply = items(self.call(cmd).await?).into_iter();
            let last = reply.next().as_ref().and_then(text).unwrap_or_default();
            let exhausted = reply.next().as_ref().and_then(int) == Some(1);
            while let (Some(id), Some(hash)) = (reply.next(), reply.next()) {
                let id = text(&id).unwrap_or_default();
                let fields = decode::hash(hash);
                let seq = format!("{:012x}", decode::seq(&fields).unwrap_or_default());
                if let Some(job) = decode::job(&id, &fields)? {
                    jobs.push((job, seq));
                }
            }
            if jobs.len() >= want || exhausted || last.is_empty() {
                break;
            }
            before = last;
        }
        let next_cursor = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|(_, seq)| seq.clone())
        } else {
            None
        };
        Ok(JobPage {
            jobs: jobs.into_iter().map(|(job, _)| job).collect(),
            next_cursor,
        })
    }

    async fn put(&self, queue: &str, new: NewSchedule) -> Result<Schedule, QueueError> {
        new.validate()?;
        Queues::validate_queue(queue)?;
        let stored = self.queue_key(queue, "S");
        // Read, then write if unchanged meanwhile (another instance may write it too).
        for _ in 0..10 {
            let mut pipe = redis::pipe();
            pipe.cmd("HGET").arg(&stored).arg(&new.name);
            let (old,): (Option<String>,) = self.run(&pipe).await?;
            let kept = old
                .as_deref()
                .and_then(|o| serde_json::from_str::<Schedule>(o).ok())
                .filter(|o| o.repeat == new.repeat);
            let now = self.now();
            let (created_at, next_run_at, last_run_at) = match kept {
                Some(o) => (o.created_at, o.next_run_at, o.last_run_at),
                None => (now, new.repeat.next_after(now, now), None),
            };
            let schedule = Schedule {
                queue: queue.to_owned(),
                name: new.name.clone(),
                repeat: new.repeat.clone(),
                payload: new.payload.clone(),
                attempts: new.attempts,
                created_at,
                next_run_at,
                last_run_at,
            };
            let json =
                serde_json::to_string(&schedule).map_err(|e| QueueError::Store(e.to_string()))?;
            let mut cmd = scripts::PUT_SCHEDULE.call(&self.meta(queue));
            cmd.arg(&schedule.name)
                .arg(old.unwrap_or_default())
                .arg(json)
                .arg(next_run_at.map(|n| n.to_string()).unwrap_or_default());
            let mut pipe = redis::pipe();
            pipe.cmd("SADD")
                .arg(&self.schedule_queues)
                .arg(queue)
                .ignore();
            pipe.add_command(cmd);
            let (written,): (i64,) = self.run(&pipe).await?;
            if written == 1 {
                return Ok(schedule);
            }
        }
        Err(QueueError::Store(format!(
            "schedule {}: kept changing while being written; try again",
            new.name
        )))
    }

    async fn list_schedules(&self, queue: &str) -> Result<Vec<Schedule>, QueueError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HVALS").arg(self.queue_key(queue, "S"));
        let (stored,): (Vec<String>,) = self.run(&pipe).await?;
        let mut schedules = stored
            .iter()
            .map(|s| serde_json::from_str::<Schedule>(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueueError::Store(format!("unreadable schedule in Redis: {e}")))?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    async fn fire(&self) -> Result<Vec<String>, QueueError> {
        let queues = self.known_queues(&self.schedule_queues).await?;
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut pipe = redis::pipe();
        for queue in &queues {
            pipe.cmd("HGETALL").arg(self.queue_key(queue, "N"));
        }
        let ticks: Vec<HashMap<String, String>> = self.run(&pipe).await?;
        let mut fired = Vec::new();
        for (queue, ticks) in queues.iter().zip(ticks) {
            for (name, tick) in ticks {
                if tick.parse::<u64>().map_or(true, |t| t > now) {
                    continue;
                }
                let mut pipe = redis::pipe();
                pipe.cmd("HGET").arg(self.queue_key(queue, "S")).arg(&name);
                let (stored,): (Option<String>,) = self.run(&pipe).await?;
                let Some(mut schedule) =
                    stored.and_then(|s| serde_json::from_str::<Schedule>(&s).ok())
                else {
                    continue;
                };
                schedule.next_run_at = schedule.repeat.next_after(now, schedule.created_at);
                schedule.last_run_at = Some(now);
                let json = serde_json::to_string(&schedule)
                    .map_err(|e| QueueError::Store(e.to_string()))?;
                let job = NewJob {
                    name: schedule.name.clone(),
                    payload: schedule.payload.clone(),
                    options: keel_queue::JobOptions {
                        attempts: schedule.attempts,
                        ..keel_queue::JobOptions::default()
                    },
                };
                let mut cmd = scripts::FIRE_SCHEDULE.call(&self.meta(queue));
                cmd.arg(now).arg(&name).arg(&tick).arg(json).arg(
                    schedule
                        .next_run_at
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                );
                Self::job_args(&mut cmd, queue, &[job])?;
                let mut pipe = redis::pipe();
                pipe.cmd("SADD").arg(&self.queues).arg(queue).ignore();
                pipe.add_command(cmd);
                let (added,): (i64,) = self.run(&pipe).await?;
                if added == 1 && !fired.contains(queue) {
                    fired.push(queue.clone());
                }
            }
        }
        Ok(fired)
    }
}

impl Store for RedisStore {
    fn add<'a>(&'a self, queue: &'a str, jobs: Vec<NewJob>) -> StoreFuture<'a, Vec<String>> {
        Box::pin(self.add_jobs(queue, jobs))
    }

    fn fetch<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        max: usize,
        lease: Duration,
    ) -> StoreFuture<'a, Vec<Fetched>> {
        Box::pin(self.fetch_jobs(queue, worker, max, lease))
    }

    fn set_limits<'a>(&'a self, queue: &'a str, limits: QueueLimits) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            Queues::validate_queue(queue)?;
            let opt = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
            let per = |r: Option<keel_queue::RateLimit>| r.map(|r| ms(r.per.get()));
            let mut cmd = scripts::SET_LIMITS.call(&self.meta(queue));
            cmd.arg(self.now())
                .arg(opt(limits.concurrency.map(u64::from)))
                .arg(opt(limits.rate.map(|r| u64::from(r.max))))
                .arg(opt(per(limits.rate)))
                .arg(opt(limits.group_rate.map(|r| u64::from(r.max))))
                .arg(opt(per(limits.group_rate)));
            self.call(cmd).await?;
            Ok(())
        })
    }

    fn complete<'a>(&'a self, id: &'a str, token: &'a str, result: Json) -> StoreFuture<'a, Moved> {
        Box::pin(async move {
            let mut outcomes = self
                .complete_jobs(vec![(id.to_owned(), token.to_owned(), result)])
                .await?;
            outcomes
                .pop()
                .unwrap_or_else(|| Err(QueueError::NoJob(id.to_owned())))
        })
    }

    fn complete_many(
        &self,
        jobs: Vec<(String, String, Json)>,
    ) -> StoreFuture<'_, Vec<Result<Moved, QueueError>>> {
        Box::pin(self.complete_jobs(jobs))
    }

    fn fail<'a>(&'a self, id: &'a str, token: &'a str, failure: Failure) -> StoreFuture<'a, Moved> {
        Box::pin(self.moved(&scripts::FAIL, id, move |cmd| {
            cmd.arg(token)
                .arg(failure.error)
                .arg(if failure.retry { "1" } else { "0" })
                .arg(
                    failure
                        .retry_after
                        .map(|d| ms(d).to_string())
                        .unwrap_or_default(),
                )
                .arg(random_unit());
        }))
    }

    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let (_, rest) = self
                .on_job(&scripts::RENEW, id, |cmd| {
                    cmd.arg(token).arg("extend").arg(ms(lease));
                })
                .await?;
            Ok(rest
                .first()
                .and_then(int)
                .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
        })
    }

    fn progress<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        progress: u8,
        data: Option<Json>,
    ) -> StoreFuture<'a, Moved> {
        Box::pin(async move {
            let (queue, _) = self
                .on_job(&scripts::RENEW, id, |cmd| {
                    cmd.arg(token)
                        .arg("progress")
                        .arg(progress.min(100))
                        .arg(data.map(|d| d.to_string()).unwrap_or_default());
                })
                .await?;
            Ok(Moved {
                queue,
                state: JobState::Active,
                ran_ms: None,
            })
        })
    }

    fn promote<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved> {
        Box::pin(self.moved(&scripts::ACT, id, |cmd| {
            cmd.arg("promote");
        }))
    }

    fn retry<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved> {
        Box::pin(self.moved(&scripts::ACT, id, |cmd| {
            cmd.arg("retry");
        }))
    }

    fn clean<'a>(
        &'a self,
        queue: &'a str,
        state: JobState,
        older_than: Duration,
    ) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            let set = match state {
                JobState::Completed => "c",
                JobState::Failed => "f",
                JobState::Cancelled => "x",
                _ => {
                    return Err(QueueError::Invalid {
                        field: "state".into(),
                        detail: "only completed, failed or cancelled jobs can be cleaned".into(),
                    });
                }
            };
            Queues::validate_queue(queue)?;
            let before = self.now().saturating_sub(ms(older_than));
            self.in_steps(&scripts::DELETE_FINISHED, queue, |cmd| {
                cmd.arg("clean").arg(set).arg(before);
            })
            .await
        })
    }

    fn retry_failed<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            Queues::validate_queue(queue)?;
            let now = self.now();
            self.in_steps(&scripts::RETRY_FAILED, queue, |cmd| {
                cmd.arg(now);
            })
            .await
        })
    }

    fn recover_stalled(&self, max_stalls: u32) -> StoreFuture<'_, usize> {
        Box::pin(self.recover(max_stalls))
    }

    fn cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved> {
        Box::pin(self.moved(&scripts::ACT, id, |cmd| {
            cmd.arg("cancel");
        }))
    }

    fn prune(&self, policy: RetentionPolicy, limit: usize) -> StoreFuture<'_, usize> {
        Box::pin(self.prune_queues(policy, limit))
    }

    fn set_paused<'a>(&'a self, queue: &'a str, paused: bool) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            Queues::validate_queue(queue)?;
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&self.queues).arg(queue).ignore();
            pipe.cmd("HSET")
                .arg(self.meta(queue))
                .arg("paused")
                .arg(u8::from(paused))
                .ignore();
            let () = self.run(&pipe).await?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>> {
        Box::pin(async move {
            let Some(queue) = queue_of(id) else {
                return Ok(None);
            };
            let mut cmd = scripts::READ.call(&self.meta(queue));
            cmd.arg(id);
            let mut reply = items(self.call(cmd).await?).into_iter();
            match (reply.next(), reply.next()) {
                (Some(_), Some(fields)) => decode::job(id, &decode::hash(fields)),
                _ => Ok(None),
            }
        })
    }

    fn list<'a>(
        &'a self,
        queue: &'a str,
        filter: JobFilter,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, JobPage> {
        Box::pin(self.list_jobs(queue, filter, cursor, limit))
    }

    fn overview(&self) -> StoreFuture<'_, Vec<QueueOverview>> {
        Box::pin(async move {
            let queues = self.known_queues(&self.queues).await?;
            let counts = self.queue_counts(&queues).await?;
            Ok(queues
                .into_iter()
                .zip(counts)
                .filter(|(_, (paused, counts))| *paused || !counts.is_empty())
                .map(|(name, (paused, counts))| QueueOverview {
                    name,
                    paused,
                    counts,
                })
                .collect())
        })
    }

    fn counts<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>> {
        Box::pin(async move {
            let mut counts = self.queue_counts(&[queue.to_owned()]).await?;
            Ok(counts.pop().map(|(_, c)| c).unwrap_or_default())
        })
    }

    fn put_schedule<'a>(
        &'a self,
        queue: &'a str,
        schedule: NewSchedule,
    ) -> StoreFuture<'a, Schedule> {
        Box::pin(self.put(queue, schedule))
    }

    fn schedules<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Vec<Schedule>> {
        Box::pin(self.list_schedules(queue))
    }

    fn delete_schedule<'a>(&'a self, queue: &'a str, name: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HDEL")
                .arg(self.queue_key(queue, "S"))
                .arg(name)
                .cmd("HDEL")
                .arg(self.queue_key(queue, "N"))
                .arg(name)
                .ignore();
            let (deleted,): (i64,) = self.run(&pipe).await?;
            Ok(deleted > 0)
        })
    }

    fn fire_schedules(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.fire())
    }

    fn queue_exists<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS").arg(self.meta(queue));
            let (exists,): (i64,) = self.run(&pipe).await?;
            Ok(exists > 0)
        })
    }

    fn delete_queue<'a>(&'a self, queue: &'a str, limit: usize) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            Queues::validate_queue(queue)?;
            let mut cmd = scripts::DELETE_QUEUE.call(&self.meta(queue));
            cmd.arg(limit.max(1));
            let deleted = usize::try_from(int(&self.call(cmd).await?).unwrap_or(0)).unwrap_or(0);
            if deleted < limit {
                let mut pipe = redis::pipe();
                pipe.cmd("SREM").arg(&self.queues).arg(queue).ignore();
                pipe.cmd("SREM")
                    .arg(&self.schedule_queues)
                    .arg(queue)
                    .ignore();
                let () = self.run(&pipe).await?;
            }
            Ok(deleted)
        })
    }

    fn oldest_waiting<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            // The first of the plain list was added first of them (and ready since); the
            // others are in `r` by when they became ready.
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGE")
                .arg(self.queue_key(queue, "r"))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
            pipe.cmd("LINDEX").arg(self.queue_key(queue, "wl")).arg(0);
            let (first, head): (Vec<(String, f64)>, Option<String>) = self.run(&pipe).await?;
            let mut oldest = first.first().map(|(_, at)| *at as u64);
            if let Some(id) = head.as_deref().and_then(|m| m.get(32..)) {
                let mut pipe = redis::pipe();
                pipe.cmd("HGET").arg(self.queue_key(queue, "h:ca")).arg(id);
                let (created,): (Option<u64>,) = self.run(&pipe).await?;
                oldest = match (oldest, created) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Ok(oldest)
        })
    }
}
