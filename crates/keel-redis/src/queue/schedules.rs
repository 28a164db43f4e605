//! Schedules in Redis: a hash of schedules (JSON) and one of their next ticks per queue; firing
//! is a compare-and-set on the tick, so one instance adds each tick's job.

use super::*;

impl RedisStore {
    pub(super) async fn put(&self, queue: &str, new: NewSchedule) -> Result<Schedule, QueueError> {
        new.validate()?;
        Queues::validate_queue(queue)?;
        let stored = self.queue_key(queue, "S");
        // Read, then write if unchanged meanwhile (another instance may write it too).
        for _ in 0..10 {
            let mut pipe = crate::pipe();
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
            let mut pipe = crate::pipe();
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

    pub(super) async fn list_schedules(&self, queue: &str) -> Result<Vec<Schedule>, QueueError> {
        let mut pipe = crate::pipe();
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

    pub(super) async fn fire(&self) -> Result<Vec<String>, QueueError> {
        let queues = self.known_queues(&self.schedule_queues).await?;
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut pipe = crate::pipe();
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
                let mut pipe = crate::pipe();
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
                let (added,): (i64,) = self.run(&self.adding(queue, cmd)).await?;
                if added == 1 && !fired.contains(queue) {
                    fired.push(queue.clone());
                }
            }
        }
        Ok(fired)
    }
}
