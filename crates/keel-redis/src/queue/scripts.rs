//! The Lua scripts that move jobs between states (the `.lua` files beside this one, each
//! run after `lua/prelude.lua`, which also describes how a job is kept). Each runs atomically
//! in Redis; KEYS[1] is always the queue's meta hash `<prefix>q:{<queue>}:m`, and every other
//! key a script touches is built from it, so all of them share the `{<queue>}` hash tag (one
//! Cluster slot).
//!
//! A queue's keys (suffixes of `<prefix>q:{<queue>}:`):
//! - `m`: meta hash — `seq` (add counter), `paused`, `floor` (the highest turn handed out),
//!   and the limits `conc`, `rmax`/`rper`, `gmax`/`gper`;
//! - `g`: each group's next turn (jobs without a group are the group `''`);
//! - `h:<column>`: the jobs, one hash per column (see the prelude);
//! - `w`: waiting jobs, all at score 0, so ordered by member: 8 hex digits of priority
//!   (offset to unsigned), 12 of turn, 12 of add order (the job's `o` column), then the id;
//! - `r`: waiting jobs by when they became ready (for the oldest wait);
//! - `d`: delayed jobs by run time; `a`: active jobs by lease expiry; `t`: active jobs with
//!   a timeout, by deadline;
//! - `c`, `f`, `x`: completed, failed and cancelled jobs by finish time;
//! - `i`: every job by add order (listings and deletes); `u`: unique key → job id;
//! - `s` and `s:<group>`: job starts in the current rate windows (only with rate limits);
//! - `S`: schedules by name (JSON), `N`: each schedule's next tick.

use std::sync::LazyLock;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// A script: its code (to load it) and its SHA1 (to call it).
pub(super) struct Lua {
    code: String,
    script: redis::Script,
}

impl Lua {
    /// `EVALSHA` of the script on the queue whose meta hash is `meta`; add the ARGV.
    pub(super) fn call(&self, meta: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(1).arg(meta);
        cmd
    }

    /// `SCRIPT LOAD` of the script.
    fn load(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(&self.code);
        cmd
    }
}

fn script(body: &str) -> Lua {
    let code = format!("{PRELUDE}\n{body}");
    Lua {
        script: redis::Script::new(&code),
        code,
    }
}

/// Adds jobs. (`lua/add.lua`)
pub(super) static ADD: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/add.lua")));

/// Leases ready jobs. (`lua/fetch.lua`)
pub(super) static FETCH: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/fetch.lua")));

/// Completes active jobs of one queue. (`lua/complete.lua`)
pub(super) static COMPLETE: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/complete.lua")));

/// Records a failed attempt. (`lua/fail.lua`)
pub(super) static FAIL: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/fail.lua")));

/// Extends a lease or records progress. (`lua/renew.lua`)
pub(super) static RENEW: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/renew.lua")));

/// Cancels, promotes or retries one job. (`lua/act.lua`)
pub(super) static ACT: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/act.lua")));

/// Puts failed jobs back to waiting. (`lua/retry_failed.lua`)
pub(super) static RETRY_FAILED: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/retry_failed.lua")));

/// Recovers expired leases and attempts past their timeout. (`lua/recover.lua`)
pub(super) static RECOVER: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/recover.lua")));

/// Cleans or prunes finished jobs. (`lua/delete_finished.lua`)
pub(super) static DELETE_FINISHED: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/delete_finished.lua")));

/// Drains a queue. (`lua/delete_queue.lua`)
pub(super) static DELETE_QUEUE: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/delete_queue.lua")));

/// Sets a queue's limits. (`lua/set_limits.lua`)
pub(super) static SET_LIMITS: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/set_limits.lua")));

/// One step of a listing. (`lua/list.lua`)
pub(super) static LIST: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/list.lua")));

/// Reads jobs by id. (`lua/read.lua`)
pub(super) static READ: LazyLock<Lua> = LazyLock::new(|| script(include_str!("lua/read.lua")));

/// Creates or replaces a schedule. (`lua/put_schedule.lua`)
pub(super) static PUT_SCHEDULE: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/put_schedule.lua")));

/// Fires a due schedule. (`lua/fire_schedule.lua`)
pub(super) static FIRE_SCHEDULE: LazyLock<Lua> =
    LazyLock::new(|| script(include_str!("lua/fire_schedule.lua")));

/// `SCRIPT LOAD` of every script, for Redis to run after it answered NOSCRIPT to a pipeline.
pub(super) static LOADS: LazyLock<Vec<redis::Cmd>> =
    LazyLock::new(|| all().iter().map(|script| script.load()).collect());

/// Every script.
fn all() -> [&'static Lua; 15] {
    [
        &ADD,
        &FETCH,
        &COMPLETE,
        &FAIL,
        &RENEW,
        &ACT,
        &RETRY_FAILED,
        &RECOVER,
        &DELETE_FINISHED,
        &DELETE_QUEUE,
        &SET_LIMITS,
        &LIST,
        &READ,
        &PUT_SCHEDULE,
        &FIRE_SCHEDULE,
    ]
}
