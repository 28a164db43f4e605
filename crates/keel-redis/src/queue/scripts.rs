//! The Lua scripts that move jobs between states. Each runs atomically in Redis; KEYS[1] is
//! always the queue's meta hash `<prefix>q:{<queue>}:m`, and every other key a script touches
//! is built from it, so all of them share the `{<queue>}` hash tag (one Cluster slot).
//!
//! A queue's keys (suffixes of `<prefix>q:{<queue>}:`):
//! - `m`: meta hash — `seq` (add counter), `paused`, `floor` (the highest turn handed out),
//!   and the limits `conc`, `rmax`/`rper`, `gmax`/`gper`;
//! - `g`: each group's next turn (jobs without a group are the group `''`);
//! - `w`: waiting jobs, all at score 0, so ordered by member: 8 hex digits of priority
//!   (offset to unsigned), 12 of turn, 12 of add order, then the id (a member is rebuilt from
//!   the job's `pr`, `rk` and `sq`, not stored);
//! - `r`: waiting jobs by when they became ready (for the oldest wait);
//! - `d`: delayed jobs by run time; `a`: active jobs by lease expiry; `t`: active jobs with
//!   a timeout, by deadline;
//! - `c`, `f`, `x`: completed, failed and cancelled jobs by finish time;
//! - `i`: every job by add order (listings and deletes); `u`: unique key → job id;
//! - `s` and `s:<group>`: job starts in the current rate windows (only with rate limits);
//! - `S`: schedules by name (JSON), `N`: each schedule's next tick;
//! - `j:<id>`: a job (hash; fields below, in `PRELUDE`'s `fields` comment).

use std::sync::LazyLock;

/// Shared by every script: key helpers, moving a job into and out of states, the backoff.
///
/// Job hash fields: `n` name, `p` payload (JSON), `st` state, `pr` priority, `rk` turn, `sq`
/// add order, `am` attempts made, `ma` attempts allowed, `bk` backoff (JSON), `uk` unique key,
/// `g` group, `ca` created, `ra` run at, `sa` started, `fa` finished, `pg` progress, `pd`
/// progress data, `rs` result, `er` errors (JSON list), `sl` stalls, `cx` cancel asked,
/// `wk` worker, `tk` lease token, `le` lease expiry, `to` timeout. Fields at their default
/// (no attempts, stalls, progress or errors yet) are left out, and `wk`, `tk` and `le` are left
/// behind when a job stops being active (they mean something only while `st` is `active`): a
/// hash small enough for Redis's compact encoding, written with few commands.
///
/// Many jobs' moves in one script write the state sets with one command per set (`batch`).
const PRELUDE: &str = r#"
local M = KEYS[1]
local B = string.sub(M, 1, -2)
local FINISHED = {completed = 'c', failed = 'f', cancelled = 'x'}
local LIVE = {waiting = true, delayed = true, active = true}

local function jkey(id) return B .. 'j:' .. id end

local function wmember(pr, rk, sq, id)
  return string.format('%08x%012x%012x', tonumber(pr) + 2147483648, tonumber(rk), tonumber(sq)) .. id
end

-- Runs `cmd key items…` in chunks (Lua's unpack has a limit); nothing for no items.
local function batch(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Makes job `id` (hash `jk`) ready since `now`.
local function to_waiting(id, jk, now)
  local f = redis.call('HMGET', jk, 'pr', 'rk', 'sq')
  redis.call('HSET', jk, 'st', 'waiting', 'ra', now)
  redis.call('ZADD', B .. 'w', 0, wmember(f[1], f[2], f[3], id))
  redis.call('ZADD', B .. 'r', now, id)
end

-- Takes an active job out of the lease sets.
local function unlease(id)
  redis.call('ZREM', B .. 'a', id)
  redis.call('ZREM', B .. 't', id)
end

-- Frees unique key `uk` if job `id` holds it.
local function free_unique(uk, id)
  if uk and redis.call('HGET', B .. 'u', uk) == id then redis.call('HDEL', B .. 'u', uk) end
end

-- Ends job `id` in a finished state; its unique key is free again.
local function finish(id, jk, state, now)
  redis.call('HSET', jk, 'st', state, 'fa', now)
  redis.call('ZADD', B .. FINISHED[state], now, id)
  free_unique(redis.call('HGET', jk, 'uk'), id)
end

local function push_error(errors, text)
  local list = cjson.decode(errors or '[]')
  list[#list + 1] = text
  return cjson.encode(list)
end

-- The wait after failed attempt `attempt`, as `Backoff::wait` computes it.
local function backoff_wait(bk, attempt, random)
  local b = cjson.decode(bk)
  local base = tonumber(b.delay_ms) or 0
  if b.type == 'exponential' then base = base * 2 ^ (attempt - 1) end
  if type(b.max_delay_ms) == 'number' and b.max_delay_ms < base then base = b.max_delay_ms end
  if base > 9007199254740992 then base = 9007199254740992 end
  local jitter = tonumber(b.jitter) or 0
  local spread = base * jitter * (2 * random - 1)
  if spread >= 0 then spread = math.floor(spread) else spread = math.ceil(spread) end
  local wait = base + spread
  if wait < 0 then wait = 0 end
  return wait
end

-- Ends a failed attempt of the active job: cancelled if asked, else delayed for a retry,
-- else failed. `retry_after` (ms or nil) replaces the backoff. Returns the new state.
local function end_failed(id, jk, now, retry, retry_after, random, note)
  local f = redis.call('HMGET', jk, 'cx', 'am', 'bk', 'er')
  unlease(id)
  redis.call('HSET', jk, 'er', push_error(f[4], note))
  if f[1] == '1' then
    finish(id, jk, 'cancelled', now)
    return 'cancelled'
  elseif retry then
    local wait = retry_after or backoff_wait(f[3], tonumber(f[2]), random)
    local at = now + wait
    redis.call('HSET', jk, 'st', 'delayed', 'ra', at)
    redis.call('ZADD', B .. 'd', at, id)
    return 'delayed'
  end
  finish(id, jk, 'failed', now)
  return 'failed'
end

-- Takes job `id` out of the set of its state `st` (its hash fields `f`: pr, rk, sq).
local function leave_state(id, st, f)
  if st == 'waiting' then
    redis.call('ZREM', B .. 'w', wmember(f[1], f[2], f[3], id))
    redis.call('ZREM', B .. 'r', id)
  elseif st == 'delayed' then
    redis.call('ZREM', B .. 'd', id)
  elseif st == 'active' then
    unlease(id)
  elseif st and FINISHED[st] then
    redis.call('ZREM', B .. FINISHED[st], id)
  end
end

-- Deletes job `id` and every index entry of it.
local function delete_job(id)
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'pr', 'rk', 'sq', 'st', 'uk')
  leave_state(id, f[4], f)
  free_unique(f[5], id)
  redis.call('ZREM', B .. 'i', id)
  redis.call('DEL', jk)
end

-- Adds the jobs in ARGV from `at`, `n` of them, 10 arguments each: id, name, payload,
-- priority, delay (ms), attempts, backoff, unique key, group, timeout ('' for none).
-- Returns each job's id (an existing live job's for a duplicate unique key).
local function add_jobs(now, at, n)
  local floor = tonumber(redis.call('HGET', M, 'floor') or '0')
  local seq = redis.call('HINCRBY', M, 'seq', n) - n
  local turns = {}
  local ids, waiting, ready, delayed, all = {}, {}, {}, {}, {}
  for k = 0, n - 1 do
    local a = at + k * 10
    local id, uk, g, to = ARGV[a], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
    local existing = nil
    if uk ~= '' then
      local other = redis.call('HGET', B .. 'u', uk)
      if other and LIVE[redis.call('HGET', jkey(other), 'st') or ''] then existing = other end
    end
    if existing then
      ids[#ids + 1] = existing
    else
      seq = seq + 1
      local turn = turns[g]
      if not turn then turn = tonumber(redis.call('HGET', B .. 'g', g) or '0') end
      if turn < floor then turn = floor end
      turns[g] = turn + 1
      local delay = tonumber(ARGV[a + 4])
      local pr = ARGV[a + 3]
      local state = 'waiting'
      if delay > 0 then state = 'delayed' end
      local fields = {'st', state, 'n', ARGV[a + 1], 'p', ARGV[a + 2], 'pr', pr, 'rk', turn,
        'sq', seq, 'ma', ARGV[a + 5], 'bk', ARGV[a + 6], 'ca', now, 'ra', now + delay}
      if uk ~= '' then
        fields[#fields + 1] = 'uk'; fields[#fields + 1] = uk
        redis.call('HSET', B .. 'u', uk, id)
      end
      if g ~= '' then fields[#fields + 1] = 'g'; fields[#fields + 1] = g end
      if to ~= '' then fields[#fields + 1] = 'to'; fields[#fields + 1] = to end
      redis.call('HSET', jkey(id), unpack(fields))
      if delay > 0 then
        delayed[#delayed + 1] = now + delay; delayed[#delayed + 1] = id
      else
        waiting[#waiting + 1] = 0; waiting[#waiting + 1] = wmember(pr, turn, seq, id)
        ready[#ready + 1] = now; ready[#ready + 1] = id
      end
      all[#all + 1] = seq; all[#all + 1] = id
      ids[#ids + 1] = id
    end
  end
  batch('ZADD', B .. 'w', waiting)
  batch('ZADD', B .. 'r', ready)
  batch('ZADD', B .. 'd', delayed)
  batch('ZADD', B .. 'i', all)
  for g, next_turn in pairs(turns) do redis.call('HSET', B .. 'g', g, next_turn) end
  return ids
end

-- Why the active job with hash fields `f` (st, tk, le) may not be reported with `token` at
-- `now`: nil when it may.
local function refusal(f, token, now)
  if not f[1] then return {'nojob'} end
  if f[1] ~= 'active' then return {'conflict', 'the job is ' .. f[1] .. ', not active'} end
  if f[2] ~= token then
    return {'conflict', 'the lease token does not match: the job is leased to another attempt'}
  end
  if tonumber(f[3]) <= now then return {'conflict', 'the lease has expired'} end
  return nil
end

-- The active job `id` if `token` holds its lease at `now`: its hash key; else nil and the
-- reply that says why.
local function leased(id, token, now)
  local jk = jkey(id)
  local refused = refusal(redis.call('HMGET', jk, 'st', 'tk', 'le'), token, now)
  if refused then return nil, refused end
  return jk
end

-- A duration as keel writes it (`HumanDuration`): 2h, 5m, 10s or 1500ms.
local function human(ms)
  if ms == 0 then return '0s' end
  for _, u in ipairs({{'h', 3600000}, {'m', 60000}, {'s', 1000}}) do
    if ms % u[2] == 0 then return string.format('%d%s', ms / u[2], u[1]) end
  end
  return string.format('%dms', ms)
end
"#;

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
    pub(super) fn load(&self) -> redis::Cmd {
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

/// Adds jobs. ARGV: now, count, then 10 per job (see `add_jobs`). Returns the ids.
pub(super) static ADD: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
return add_jobs(tonumber(ARGV[1]), 3, tonumber(ARGV[2]))
"#,
    )
});

/// Leases ready jobs. ARGV: now, worker, max, lease (ms), token prefix. Returns each leased
/// job's id and hash (flat field/value list) as it was before the lease: the caller knows
/// what the lease changed (state, one more attempt, start, worker, token `<prefix>.<n>` for
/// the n-th job, expiry).
pub(super) static FETCH: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now, worker, max, lease, tb = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local meta = redis.call('HMGET', M, 'paused', 'conc', 'rmax', 'rper', 'gmax', 'gper', 'floor')
if meta[1] == '1' or max <= 0 then return {} end
-- Delayed jobs whose time has come are ready (a bounded step; the rest on the next fetch).
local due = redis.call('ZRANGEBYSCORE', B .. 'd', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local jk = jkey(id)
  to_waiting(id, jk, tonumber(redis.call('HGET', jk, 'ra')))
end
batch('ZREM', B .. 'd', due)
local budget = max
local conc, rmax, rper, gmax, gper = tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4]), tonumber(meta[5]), tonumber(meta[6])
if conc then budget = math.min(budget, conc - redis.call('ZCARD', B .. 'a')) end
if rmax then
  redis.call('ZREMRANGEBYSCORE', B .. 's', '-inf', now - rper)
  budget = math.min(budget, rmax - redis.call('ZCARD', B .. 's'))
end
if budget <= 0 then return {} end
local picked = {}
if gmax then
  -- Jobs of groups at their limit are passed over, so look further than needed.
  for _, m in ipairs(redis.call('ZRANGE', B .. 'w', 0, budget * 4 + 63)) do
    if #picked == budget then break end
    local g = redis.call('HGET', jkey(string.sub(m, 33)), 'g')
    local admitted = true
    if g then
      redis.call('ZREMRANGEBYSCORE', B .. 's:' .. g, '-inf', now - gper)
      admitted = redis.call('ZCARD', B .. 's:' .. g) < gmax
      if admitted then redis.call('ZADD', B .. 's:' .. g, now, tb .. '.' .. (#picked + 1)) end
    end
    if admitted then picked[#picked + 1] = m end
  end
  batch('ZREM', B .. 'w', picked)
else
  local popped = redis.call('ZPOPMIN', B .. 'w', budget)
  for k = 1, #popped, 2 do picked[#picked + 1] = popped[k] end
end
local out, ids, active, timed, starts = {}, {}, {}, {}, {}
local expires = now + lease
local floor = tonumber(meta[7] or '0')
local raised = false
for n, m in ipairs(picked) do
  local id = string.sub(m, 33)
  local jk = jkey(id)
  local h = redis.call('HGETALL', jk)
  local am, to = 0, nil
  for k = 1, #h, 2 do
    if h[k] == 'am' then am = tonumber(h[k + 1]) elseif h[k] == 'to' then to = tonumber(h[k + 1]) end
  end
  local token = tb .. '.' .. n
  redis.call('HSET', jk, 'st', 'active', 'am', am + 1, 'sa', now, 'wk', worker, 'tk', token, 'le', expires)
  ids[#ids + 1] = id
  active[#active + 1] = expires; active[#active + 1] = id
  if to then timed[#timed + 1] = now + to; timed[#timed + 1] = id end
  if rmax then starts[#starts + 1] = now; starts[#starts + 1] = token end
  local rank = tonumber(string.sub(m, 9, 20), 16)
  if rank > floor then floor = rank; raised = true end
  out[#out + 1] = id
  out[#out + 1] = h
end
batch('ZREM', B .. 'r', ids)
batch('ZADD', B .. 'a', active)
batch('ZADD', B .. 't', timed)
batch('ZADD', B .. 's', starts)
if raised then redis.call('HSET', M, 'floor', floor) end
return out
"#,
    )
});

/// Completes active jobs of one queue. ARGV: now, then id, token, result ('' for none) per
/// job. Returns one reply per job: {'ok', state, ran ms} or {'nojob'} or {'conflict', why}.
pub(super) static COMPLETE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now = tonumber(ARGV[1])
local out, ids, timed = {}, {}, {}
local ended = {c = {}, x = {}}
for a = 2, #ARGV, 3 do
  local id = ARGV[a]
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'st', 'tk', 'le', 'cx', 'sa', 'uk', 'to')
  local refused = refusal(f, ARGV[a + 1], now)
  if refused then
    out[#out + 1] = refused
  else
    local state, set = 'completed', ended.c
    if f[4] == '1' then state, set = 'cancelled', ended.x end
    if ARGV[a + 2] == '' then
      redis.call('HSET', jk, 'st', state, 'fa', now, 'pg', 100)
    else
      redis.call('HSET', jk, 'st', state, 'fa', now, 'pg', 100, 'rs', ARGV[a + 2])
    end
    free_unique(f[6], id)
    ids[#ids + 1] = id
    if f[7] then timed[#timed + 1] = id end
    set[#set + 1] = now; set[#set + 1] = id
    out[#out + 1] = {'ok', state, now - tonumber(f[5] or now)}
  end
end
batch('ZREM', B .. 'a', ids)
batch('ZREM', B .. 't', timed)
batch('ZADD', B .. 'c', ended.c)
batch('ZADD', B .. 'x', ended.x)
return out
"#,
    )
});

/// Records a failed attempt. ARGV: now, id, token, error, retry (1/0), retry-after ms (''
/// for the backoff), a random number in [0, 1). Returns {'ok', state, ran ms} or a refusal.
pub(super) static FAIL: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now, id = tonumber(ARGV[1]), ARGV[2]
local jk, refused = leased(id, ARGV[3], now)
if not jk then return refused end
local f = redis.call('HMGET', jk, 'am', 'ma', 'sa')
local retry = ARGV[5] == '1' and tonumber(f[1]) < tonumber(f[2])
local state = end_failed(id, jk, now, retry, tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[4])
return {'ok', state, now - tonumber(f[3] or now)}
"#,
    )
});

/// Extends a lease, or records progress. ARGV: now, id, token, then 'extend' and the lease
/// (ms), or 'progress', the percentage and data ('' for none). Returns {'ok', expiry} or a
/// refusal; a cancelled job refuses both.
pub(super) static RENEW: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now, id = tonumber(ARGV[1]), ARGV[2]
local jk, refused = leased(id, ARGV[3], now)
if not jk then return refused end
if redis.call('HGET', jk, 'cx') == '1' then return {'conflict', 'the job was cancelled'} end
if ARGV[4] == 'extend' then
  local expires = now + tonumber(ARGV[5])
  redis.call('HSET', jk, 'le', expires)
  redis.call('ZADD', B .. 'a', expires, id)
  return {'ok', expires}
end
redis.call('HSET', jk, 'pg', ARGV[5])
if ARGV[6] == '' then redis.call('HDEL', jk, 'pd') else redis.call('HSET', jk, 'pd', ARGV[6]) end
return {'ok', 0}
"#,
    )
});

/// Acts on one job by id. ARGV: now, id, then 'cancel', 'promote' or 'retry'. Returns
/// {'ok', state} or a refusal.
pub(super) static ACT: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now, id, action = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local jk = jkey(id)
local f = redis.call('HMGET', jk, 'pr', 'rk', 'sq', 'st', 'uk')
local st = f[4]
if not st then return {'nojob'} end
if action == 'cancel' then
  if st == 'active' then
    redis.call('HSET', jk, 'cx', 1)
    return {'ok', 'active'}
  elseif st ~= 'waiting' and st ~= 'delayed' then
    return {'ok', st}
  end
  leave_state(id, st, f)
  finish(id, jk, 'cancelled', now)
  return {'ok', 'cancelled'}
elseif action == 'promote' then
  if st ~= 'delayed' then
    return {'conflict', 'only a delayed job can be promoted; this one is ' .. st}
  end
  redis.call('ZREM', B .. 'd', id)
  to_waiting(id, jk, now)
  return {'ok', 'waiting'}
end
if st ~= 'failed' and st ~= 'cancelled' then
  return {'conflict', 'only a failed or cancelled job can be retried; this one is ' .. st}
end
redis.call('ZREM', B .. FINISHED[st], id)
redis.call('HSET', jk, 'am', 0, 'sl', 0, 'cx', 0, 'pg', 0)
redis.call('HDEL', jk, 'fa', 'pd')
to_waiting(id, jk, now)
if f[5] then redis.call('HSETNX', B .. 'u', f[5], id) end
return {'ok', 'waiting'}
"#,
    )
});

/// Puts up to 1,000 failed jobs back to waiting with fresh attempts. ARGV: now. Returns how
/// many (call again while it answers 1,000).
pub(super) static RETRY_FAILED: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', B .. 'f', 0, 999)
for _, id in ipairs(ids) do
  local jk = jkey(id)
  redis.call('ZREM', B .. 'f', id)
  redis.call('HSET', jk, 'am', 0, 'sl', 0, 'cx', 0, 'pg', 0)
  redis.call('HDEL', jk, 'fa', 'pd')
  to_waiting(id, jk, now)
  local uk = redis.call('HGET', jk, 'uk')
  if uk then redis.call('HSETNX', B .. 'u', uk, id) end
end
return #ids
"#,
    )
});

/// Returns expired leases to waiting (or fails them: out of stalls or attempts) and fails
/// attempts past their timeout, up to 1,000 of each. ARGV: now, max stalls, a random number
/// in [0, 1). Returns {expired leases handled, timed-out attempts handled}.
pub(super) static RECOVER: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now, max_stalls, random = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stalled = redis.call('ZRANGEBYSCORE', B .. 'a', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(stalled) do
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'wk', 'am', 'ma', 'sl', 'er', 'cx')
  local stalls = tonumber(f[4] or '0') + 1
  local note = string.format('stalled: the lease of worker %s expired without a report (stall %d)', f[1] or '?', stalls)
  unlease(id)
  redis.call('HSET', jk, 'sl', stalls, 'er', push_error(f[5], note))
  if f[6] == '1' then
    finish(id, jk, 'cancelled', now)
  elseif stalls > max_stalls or tonumber(f[2]) >= tonumber(f[3]) then
    finish(id, jk, 'failed', now)
  else
    to_waiting(id, jk, now)
  end
end
local overdue = redis.call('ZRANGEBYSCORE', B .. 't', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(overdue) do
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'am', 'ma', 'to')
  local note = 'timed out: the attempt ran longer than the job\'s timeout (' .. human(tonumber(f[3])) .. ')'
  end_failed(id, jk, now, tonumber(f[1]) < tonumber(f[2]), nil, random, note)
end
return {#stalled, #overdue}
"#,
    )
});

/// Deletes finished jobs. ARGV: 'clean', the state's key letter, the newest finish time to
/// delete (inclusive); or 'prune', room, now, completed to keep, failed to keep, the oldest
/// finish time to keep ('' for no age limit). Returns how many it deleted (clean: at most
/// 1,000 a call).
pub(super) static DELETE_FINISHED: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local function drop(ids)
  for _, id in ipairs(ids) do delete_job(id) end
  return #ids
end
if ARGV[1] == 'clean' then
  return drop(redis.call('ZRANGEBYSCORE', B .. ARGV[2], '-inf', ARGV[3], 'LIMIT', 0, 1000))
end
local room = tonumber(ARGV[2])
local deleted = 0
local before = ARGV[6]
for _, kind in ipairs({{'c', tonumber(ARGV[4])}, {'f', tonumber(ARGV[5])}, {'x', tonumber(ARGV[5])}}) do
  local set, keep = B .. kind[1], kind[2]
  if before ~= '' and room - deleted > 0 then
    deleted = deleted + drop(redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. before, 'LIMIT', 0, room - deleted))
  end
  if room - deleted <= 0 then return deleted end
  local excess = redis.call('ZCARD', set) - keep
  if excess > 0 then
    deleted = deleted + drop(redis.call('ZRANGE', set, 0, math.min(excess, room - deleted) - 1))
  end
end
return deleted
"#,
    )
});

/// Deletes up to ARGV[1] jobs of the queue, in any state; once none are left, every key of the
/// queue. Returns how many jobs it deleted.
pub(super) static DELETE_QUEUE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local limit = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', B .. 'i', 0, limit - 1)
for _, id in ipairs(ids) do delete_job(id) end
if #ids < limit then
  for _, g in ipairs(redis.call('HKEYS', B .. 'g')) do redis.call('DEL', B .. 's:' .. g) end
  redis.call('DEL', M, B .. 'g', B .. 'w', B .. 'r', B .. 'd', B .. 'a', B .. 't', B .. 'c',
    B .. 'f', B .. 'x', B .. 'i', B .. 'u', B .. 's', B .. 'S', B .. 'N')
end
return #ids
"#,
    )
});

/// Sets the queue's limits. ARGV: now, then conc, rmax, rper, gmax, gper ('' for none).
/// Starts still inside the longest window (of active jobs and jobs finished since) count
/// against the new limits.
pub(super) static SET_LIMITS: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now = tonumber(ARGV[1])
local names = {'conc', 'rmax', 'rper', 'gmax', 'gper'}
for i, name in ipairs(names) do
  if ARGV[i + 1] == '' then redis.call('HDEL', M, name) else redis.call('HSET', M, name, ARGV[i + 1]) end
end
redis.call('DEL', B .. 's')
for _, g in ipairs(redis.call('HKEYS', B .. 'g')) do redis.call('DEL', B .. 's:' .. g) end
local rper, gper = tonumber(ARGV[4]), tonumber(ARGV[6])
if not rper and not gper then return 0 end
local since = now - math.max(rper or 0, gper or 0)
local ids = redis.call('ZRANGE', B .. 'a', 0, -1)
for _, set in ipairs({'c', 'f', 'x'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', B .. set, '(' .. since, '+inf')) do ids[#ids + 1] = id end
end
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', jkey(id), 'sa', 'g')
  local at = tonumber(f[1] or '0')
  if rper and at > now - rper then redis.call('ZADD', B .. 's', at, id) end
  if gper and f[2] and at > now - gper then redis.call('ZADD', B .. 's:' .. f[2], at, id) end
end
return #ids
"#,
    )
});

/// One step of a listing: examines up to ARGV[3] jobs added before add order ARGV[1]
/// ('+inf' from the newest), newest first, keeping those that match — state ARGV[4], name
/// ARGV[5], group ARGV[6] ('' for any), and search ARGV[7] ('' for none: the id, or text in
/// the name or payload, ASCII case ignored) — until ARGV[2] match. Returns {the add order of
/// the last job examined, 1 if no job is left, the id and hash of each matching job…}.
pub(super) static LIST: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local before, want, examine = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state, name, group, search = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local needle = string.lower(search)
local max = '+inf'
if before ~= '+inf' then max = '(' .. before end
local page = redis.call('ZREVRANGEBYSCORE', B .. 'i', max, '-inf', 'WITHSCORES', 'LIMIT', 0, examine)
local out = {'', 0}
local last = nil
local found = 0
for k = 1, #page, 2 do
  local id = page[k]
  last = page[k + 1]
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'st', 'n', 'g', 'p')
  local ok = (state == '' or f[1] == state) and (name == '' or f[2] == name)
    and (group == '' or f[3] == group)
  if ok and search ~= '' then
    ok = id == search or string.find(string.lower(f[2] or ''), needle, 1, true) ~= nil
      or string.find(string.lower(f[4] or ''), needle, 1, true) ~= nil
  end
  if ok then
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', jk)
    found = found + 1
    if found == want then break end
  end
end
out[1] = last or ''
-- No job is left when the step read fewer than it asked for and examined all of them.
if #page < examine * 2 and last == page[#page] then out[2] = 1 end
return out
"#,
    )
});

/// Creates or replaces a schedule if it is still as read. ARGV: name, its JSON as read (''
/// for none), the new JSON, its next tick ('' for none). Returns 1, or 0 if it changed
/// meanwhile.
pub(super) static PUT_SCHEDULE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local name = ARGV[1]
if (redis.call('HGET', B .. 'S', name) or '') ~= ARGV[2] then return 0 end
redis.call('HSET', B .. 'S', name, ARGV[3])
if ARGV[4] == '' then redis.call('HDEL', B .. 'N', name) else redis.call('HSET', B .. 'N', name, ARGV[4]) end
redis.call('HINCRBY', M, 'seq', 0)
return 1
"#,
    )
});

/// Fires a schedule if its next tick is still the one read: adds its job and moves it on.
/// ARGV: now, name, the tick read, the schedule's new JSON, its new next tick ('' for none),
/// then the job (10 arguments, see `add_jobs`). Returns 1 if it fired, 0 if another instance
/// did.
pub(super) static FIRE_SCHEDULE: LazyLock<Lua> = LazyLock::new(|| {
    script(
        r#"
local now, name = tonumber(ARGV[1]), ARGV[2]
if redis.call('HGET', B .. 'N', name) ~= ARGV[3] then return 0 end
add_jobs(now, 6, 1)
redis.call('HSET', B .. 'S', name, ARGV[4])
if ARGV[5] == '' then redis.call('HDEL', B .. 'N', name) else redis.call('HSET', B .. 'N', name, ARGV[5]) end
return 1
"#,
    )
});

/// Every script, for loading them after Redis answers NOSCRIPT to a pipeline.
pub(super) fn all() -> [&'static Lua; 14] {
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
        &PUT_SCHEDULE,
        &FIRE_SCHEDULE,
    ]
}
