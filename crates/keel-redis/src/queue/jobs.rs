//! The job operations of [`RedisStore`](super::RedisStore) that take more than one script
//! call or shape their replies: adds, fetches, completions, recovery, pruning, listings and
//! counts.

use super::*;

impl RedisStore {
    /// Every queue the store knows of (with jobs, paused, or resumed), by name.
    pub(super) async fn known_queues(&self, set: &str) -> Result<Vec<String>, QueueError> {
        let mut pipe = crate::pipe();
        pipe.cmd("SMEMBERS").arg(set);
        let (mut queues,): (Vec<String>,) = self.run(&pipe).await?;
        queues.sort();
        Ok(queues)
    }

    /// Job counts by state of each of `queues`, and whether each is paused.
    pub(super) async fn queue_counts(
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
        let mut pipe = crate::pipe();
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

    /// Appends to `cmd` (ADD, or FIRE_SCHEDULE after its own arguments) the 10 arguments the
    /// scripts' `add_jobs` takes for each of `jobs`, with the ids made here (`<uuid>~<queue>`).
    pub(super) fn job_args(
        cmd: &mut redis::Cmd,
        queue: &str,
        jobs: &[NewJob],
    ) -> Result<(), QueueError> {
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

    pub(super) async fn add_jobs(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<String>, QueueError> {
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
        let pipe = self.adding(queue, cmd);
        let timeout = self.redis.command_timeout()
            + ADD_TIME_PER_JOB * u32::try_from(jobs.len()).unwrap_or(u32::MAX);
        let (ids,): (Vec<String>,) = self.run_within(&pipe, timeout).await?;
        Ok(ids)
    }

    pub(super) async fn fetch_jobs(
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
        // The columns a fetched job is read from (what the lease changes is known here).
        const READ: [&str; 11] = ["n", "p", "d", "uk", "g", "to", "ra", "pg", "pd", "er", "sl"];
        let mut cmd = scripts::FETCH.call(&self.meta(queue));
        cmd.arg(now).arg(worker).arg(max).arg(expires).arg(&token);
        for column in READ {
            cmd.arg(column);
        }
        let mut reply = items(self.call(cmd).await?).into_iter();
        // Ids, attempts made, then the columns.
        let ids: Vec<String> = items(reply.next().unwrap_or_default())
            .iter()
            .map(|m| text(m).unwrap_or_default())
            .collect();
        // Attempts made: 1, but for the jobs listed (position, count), back for another.
        let mut made: Vec<Option<String>> = vec![None; ids.len()];
        for pair in items(reply.next().unwrap_or_default()).chunks(2) {
            if let [Value::Int(at), count] = pair
                && let Some(slot) = usize::try_from(*at).ok().and_then(|at| made.get_mut(at))
            {
                *slot = text(count);
            }
        }
        let columns: Vec<Vec<Value>> = reply.map(items).collect();
        let lease = format!("{token}|{expires}|{now}|{worker}");
        let mut fetched = Vec::with_capacity(ids.len());
        for (k, (id, made)) in ids.iter().zip(&made).enumerate() {
            // What the lease changed is known here; the rest is read from the reply in place.
            let column = |name: &str| -> Option<&str> {
                match name {
                    "st" => Some(JobState::Active.as_str()),
                    "am" => Some(made.as_deref().unwrap_or("1")),
                    "ls" => Some(lease.as_str()),
                    _ => {
                        let at = READ.iter().position(|c| *c == name)?;
                        decode::text_ref(columns.get(at)?.get(k)?)
                    }
                }
            };
            // A job without its description would be a store out of step with itself.
            if column("d").is_none() {
                continue;
            }
            fetched.push(Fetched {
                job: decode::job_from(id, column)?,
                token: token.clone(),
                lease_expires_at: expires,
            });
        }
        Ok(fetched)
    }

    pub(super) async fn complete_jobs(
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
            let mut pipe = crate::pipe();
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
                let reply = items(reply);
                for (&i, outcome) in members.iter().zip(&reply) {
                    outcomes[i] = Some(decode::completion(&jobs[i].0, queue, outcome, now));
                }
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(QueueError::Store("no reply for a job".into()))))
            .collect())
    }

    /// Calls `script` on `queue` with `args` until it answers fewer than [`STEP`]; the sum.
    pub(super) async fn in_steps(
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

    pub(super) async fn recover(&self, max_stalls: u32) -> Result<usize, QueueError> {
        let mut queues = self.known_queues(&self.queues).await?;
        let mut recovered = 0;
        while !queues.is_empty() {
            let mut pipe = crate::pipe();
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

    pub(super) async fn prune_queues(
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

    pub(super) async fn list_jobs(
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
}
