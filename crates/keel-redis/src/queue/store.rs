//! [`Store`] for [`RedisStore`](super::RedisStore): each operation as one script call (or a
//! few), through the helpers of the other modules.

use super::*;

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
            let mut pipe = crate::pipe();
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
            let mut pipe = crate::pipe();
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
            let mut pipe = crate::pipe();
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
                let mut pipe = crate::pipe();
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

    fn added_elsewhere(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = tokio::sync::broadcast::channel(256);
        tokio::spawn(added::listen(
            self.redis.clone(),
            self.added_channel.clone(),
            self.instance.clone(),
            sender,
        ));
        Some(receiver)
    }

    fn oldest_waiting<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Option<u64>> {
        Box::pin(async move {
            // The first of the plain list was added first of them (and ready since); the
            // others are in `r` by when they became ready.
            let mut pipe = crate::pipe();
            pipe.cmd("ZRANGE")
                .arg(self.queue_key(queue, "r"))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
            pipe.cmd("LINDEX").arg(self.queue_key(queue, "wl")).arg(0);
            let (first, head): (Vec<(String, f64)>, Option<String>) = self.run(&pipe).await?;
            let mut oldest = first.first().map(|(_, at)| *at as u64);
            if let Some(id) = head.as_deref().and_then(|m| m.get(32..)) {
                let mut pipe = crate::pipe();
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
