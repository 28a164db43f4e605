-- Shared by every script. KEYS[1] is the queue's meta hash `<prefix>q:{<queue>}:m`; every
-- other key is built from it, so all share the `{<queue>}` hash tag (one Cluster slot).
--
-- A job is a field of several per-queue hashes ("columns", `h:<name>`, each job id → value),
-- not a hash of its own: a script moving fifty jobs then writes each column with one command
-- for all of them, instead of one command per job, and Redis spends its time on the data
-- rather than on script calls. Columns: `n` name, `p` payload (JSON), `d` what else never
-- changes, `created|attempts allowed|order|backoff` (the order is the waiting member without
-- the id; the backoff is JSON, empty for the default), `st` state, `uk` unique key, `g` group,
-- `to` timeout, `ra` run at (absent = created), `am` attempts made (absent: 1 if the job has a
-- lease, else 0 — a job's first fetch writes no count), `fa` finished, `ls` the last lease
-- (token|expiry|started|worker; its worker and expiry count only while the job is active),
-- `cx` cancel asked, `pg` progress (absent for a completed job: 100), `pd` progress data, `rs`
-- result, `er` errors (JSON list), `sl` stalls. Absent means the default (0, none).
--
-- Waiting jobs of priority 0 without a group, in the order they were added, are the list `wl`
-- (members as in `w`): most jobs, taken by LPOP instead of through the sorted set `w`, which
-- holds the others (and jobs back from a delay, a retry or a stall); a fetch merges the two
-- heads. Finished jobs are the lists `c`, `f` and `x`, newest first, so retention and cleaning
-- pop the oldest from their tails.
--
-- Numbers are handed to Redis as strings where the hot paths can: Redis writes a Lua number
-- with printf's `%.17g`, which costs more than the command it goes to. Times come in ARGV as
-- text and go out as that text; lease tokens are one per fetch call (a token only has to tell
-- one job's attempts apart).
local M = KEYS[1]
local B = string.sub(M, 1, -2)
local FINISHED = {completed = 'c', failed = 'f', cancelled = 'x'}
local LIVE = {waiting = true, delayed = true, active = true}
local COLUMNS = {'n', 'p', 'd', 'st', 'uk', 'g', 'to', 'ra', 'am', 'fa', 'ls', 'cx', 'pg', 'pd',
  'rs', 'er', 'sl'}

local function col(name) return B .. 'h:' .. name end
local function get(name, id) return redis.call('HGET', col(name), id) end

-- The parts of a job's `d`: created, attempts allowed, order, backoff ('' for the default).
local function described(d)
  return string.match(d or '', '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
end
local function order_of(id)
  local _, _, o = described(get('d', id))
  return o
end
local function max_attempts(id)
  local _, ma = described(get('d', id))
  return tonumber(ma) or 1
end
local function put(name, id, value) redis.call('HSET', col(name), id, value) end
local function drop(name, id) redis.call('HDEL', col(name), id) end
-- Attempts made by job `id` (see `am` above).
local function attempts_made(id)
  local am = get('am', id)
  if am then return tonumber(am) end
  if get('ls', id) then return 1 end
  return 0
end
-- Gives job `id` a fresh set of attempts (its last lease stays, for its start time).
local function reset_attempts(id)
  put('am', id, '0')
end
-- Whether any job of the queue has column `name` (most queues never use some: no unique keys,
-- no cancels…); reading such a column for a batch is skipped.
local function has_column(name) return redis.call('EXISTS', col(name)) == 1 end

-- Runs `cmd key items…` in chunks (Lua's unpack has a limit); nothing for no items.
local function batch(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Column `name` of jobs `ids`, in order (false where absent).
local function column(name, ids)
  if #ids == 0 then return {} end
  -- One call's reply as it is (copying it into a new table costs as much as the call).
  if #ids <= 1000 then return redis.call('HMGET', col(name), unpack(ids)) end
  local out = {}
  for i = 1, #ids, 1000 do
    local part = redis.call('HMGET', col(name), unpack(ids, i, math.min(i + 999, #ids)))
    for _, v in ipairs(part) do out[#out + 1] = v end
  end
  return out
end

-- Jobs `ids` as {id, {column, value, …}, …} with columns `names` (every column by default).
local function read_jobs(ids, names)
  names = names or COLUMNS
  local out = {}
  for k, id in ipairs(ids) do out[2 * k - 1] = id; out[2 * k] = {} end
  for _, name in ipairs(names) do
    local values = column(name, ids)
    for k = 1, #ids do
      if values[k] then
        local fields = out[2 * k]
        fields[#fields + 1] = name; fields[#fields + 1] = values[k]
      end
    end
  end
  return out
end

-- The order of a job: priority (offset to unsigned), turn and add order, in hex, so members
-- of `w` (the order then the id, all at score 0) sort by them.
local function order(pr, rk, sq)
  return string.format('%08x%012x%012x', tonumber(pr) + 2147483648, rk, sq)
end

-- Makes job `id` ready since `now`.
local function to_waiting(id, now)
  put('st', id, 'waiting')
  put('ra', id, now)
  redis.call('ZADD', B .. 'w', 0, order_of(id) .. id)
  redis.call('ZADD', B .. 'r', now, id)
end

-- Takes an active job out of the lease sets (its lease stays, for its start time).
local function unlease(id)
  redis.call('ZREM', B .. 'a', id)
  redis.call('ZREM', B .. 't', id)
end

-- Frees unique key `uk` if job `id` holds it.
local function free_unique(uk, id)
  if uk and redis.call('HGET', B .. 'u', uk) == id then redis.call('HDEL', B .. 'u', uk) end
end

-- Ends job `id` in a finished state; its unique key is free again.
local function finish(id, state, now)
  put('st', id, state)
  put('fa', id, now)
  redis.call('LPUSH', B .. FINISHED[state], id)
  free_unique(get('uk', id), id)
end

-- The parts of a lease: token, expiry, started, worker (which may hold the separator).
local function lease_parts(ls)
  return string.match(ls or '', '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
end

local function push_error(id, text)
  local list = cjson.decode(get('er', id) or '[]')
  list[#list + 1] = text
  put('er', id, cjson.encode(list))
end

-- The wait after failed attempt `attempt` with backoff `bk` (JSON), as `Backoff::wait`
-- computes it.
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
-- else failed. `retry_after` (ms or nil) replaces the backoff; `default_bk` is the backoff of
-- jobs without their own. Returns the new state.
local function end_failed(id, now, retry, retry_after, random, note, default_bk)
  unlease(id)
  push_error(id, note)
  if get('cx', id) == '1' then
    finish(id, 'cancelled', now)
    return 'cancelled'
  elseif retry then
    local wait = retry_after
    if not wait then
      local _, _, _, bk = described(get('d', id))
      if bk == '' then bk = default_bk end
      wait = backoff_wait(bk, attempts_made(id), random)
    end
    local at = now + wait
    put('st', id, 'delayed')
    put('ra', id, at)
    redis.call('ZADD', B .. 'd', at, id)
    return 'delayed'
  end
  finish(id, 'failed', now)
  return 'failed'
end

-- Deletes jobs `ids` (of any state) and every index entry of them; `popped`: they were
-- already taken out of the list of their state.
local function delete_jobs(ids, popped)
  if #ids == 0 then return end
  -- Jobs popped from a list of finished jobs are in no other state's set or list.
  local states = {}
  if not popped then states = column('st', ids) end
  local descs = column('d', ids)
  local uniques = {}
  if has_column('uk') then uniques = column('uk', ids) end
  local orders = {}
  local sets = {w = {}, r = {}, d = {}, a = {}, t = {}, i = {}}
  for k, id in ipairs(ids) do
    local d = descs[k]
    -- The member of `i`: the order's add order (its last 12 hex digits), then the id.
    local a = d and string.find(d, '|', 1, true)
    local b = a and string.find(d, '|', a + 1, true)
    local c = b and string.find(d, '|', b + 1, true)
    if c then
      sets.i[#sets.i + 1] = string.sub(d, b + 21, c - 1) .. id
      if not popped then orders[k] = string.sub(d, b + 1, c - 1) end
    end
    local st = states[k]
    if st == 'waiting' then
      sets.w[#sets.w + 1] = orders[k] .. id
      sets.r[#sets.r + 1] = id
      -- In the list of plain waiting jobs, if not in `w` (a scan of the list: rare).
      if not popped then redis.call('LREM', B .. 'wl', 1, orders[k] .. id) end
    elseif st == 'delayed' then
      sets.d[#sets.d + 1] = id
    elseif st == 'active' then
      sets.a[#sets.a + 1] = id
      sets.t[#sets.t + 1] = id
    elseif st and FINISHED[st] and not popped then
      redis.call('LREM', B .. FINISHED[st], 1, id)
    end
    free_unique(uniques[k], id)
  end
  for name, members in pairs(sets) do batch('ZREM', B .. name, members) end
  for _, name in ipairs(COLUMNS) do
    if has_column(name) then batch('HDEL', col(name), ids) end
  end
end

-- Adds the jobs in ARGV from `at`, `n` of them, 10 arguments each: id, name, payload,
-- priority, delay (ms), attempts, backoff ('' for the default), unique key, group, timeout
-- ('' for none), at `now_s` (Unix ms, as text). Returns each job's id (an existing live
-- job's for a duplicate unique key).
local function add_jobs(now_s, at, n)
  local now = tonumber(now_s)
  local floor = tonumber(redis.call('HGET', M, 'floor') or '0')
  local seq = redis.call('HINCRBY', M, 'seq', n) - n
  local turns = {}
  local ids = {}
  local cols = {n = {}, p = {}, d = {}, st = {}, uk = {}, g = {}, to = {}, ra = {}}
  local waiting, ready, plain, delayed, all = {}, {}, {}, {}, {}
  local fresh = {}
  local function add(name, id, value)
    local list = cols[name]
    list[#list + 1] = id; list[#list + 1] = value
  end
  for k = 0, n - 1 do
    local a = at + k * 10
    local id, uk, g = ARGV[a], ARGV[a + 7], ARGV[a + 8]
    local existing = nil
    if uk ~= '' then
      -- A job of this call is written at its end, so looked up here first.
      existing = fresh[uk] or redis.call('HGET', B .. 'u', uk)
      if existing and not fresh[uk] and not LIVE[get('st', existing) or ''] then existing = nil end
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
      local o = order(ARGV[a + 3], turn, seq)
      add('n', id, ARGV[a + 1]); add('p', id, ARGV[a + 2])
      add('d', id, now_s .. '|' .. ARGV[a + 5] .. '|' .. o .. '|' .. ARGV[a + 6])
      if uk ~= '' then
        add('uk', id, uk)
        fresh[uk] = id
        redis.call('HSET', B .. 'u', uk, id)
      end
      if g ~= '' then add('g', id, g) end
      if ARGV[a + 9] ~= '' then add('to', id, ARGV[a + 9]) end
      if delay > 0 then
        add('st', id, 'delayed'); add('ra', id, now + delay)
        delayed[#delayed + 1] = now + delay; delayed[#delayed + 1] = id
      elseif ARGV[a + 3] == '0' and g == '' then
        add('st', id, 'waiting')
        plain[#plain + 1] = o .. id
      else
        add('st', id, 'waiting')
        waiting[#waiting + 1] = '0'; waiting[#waiting + 1] = o .. id
        ready[#ready + 1] = now_s; ready[#ready + 1] = id
      end
      -- By add order: all at score 0, the order's last 12 hex digits first.
      all[#all + 1] = '0'; all[#all + 1] = string.sub(o, 21) .. id
      ids[#ids + 1] = id
    end
  end
  for name, pairs_ in pairs(cols) do batch('HSET', col(name), pairs_) end
  batch('ZADD', B .. 'w', waiting)
  batch('ZADD', B .. 'r', ready)
  batch('RPUSH', B .. 'wl', plain)
  batch('ZADD', B .. 'd', delayed)
  batch('ZADD', B .. 'i', all)
  for g, next_turn in pairs(turns) do redis.call('HSET', B .. 'g', g, next_turn) end
  return ids
end

-- Why a job in state `st` leased to `held` until `expires` may not be reported with `token`
-- at `now`: nil when it may.
local function refusal_of(st, held, expires, token, now)
  if not st then return {'nojob'} end
  if st ~= 'active' then return {'conflict', 'the job is ' .. st .. ', not active'} end
  if held ~= token then
    return {'conflict', 'the lease token does not match: the job is leased to another attempt'}
  end
  if tonumber(expires) <= now then return {'conflict', 'the lease has expired'} end
  return nil
end

-- Why job `id` in state `st` with lease `ls` may not be reported with `token` at `now`: nil
-- when it may.
local function refusal(st, ls, token, now)
  local held, expires = lease_parts(ls)
  return refusal_of(st, held, expires, token, now)
end

-- Whether `token` holds the lease of job `id` at `now`: nil, or the reply that says why not.
local function leased(id, token, now)
  return refusal(get('st', id), get('ls', id), token, now)
end

-- A duration as keel writes it (`HumanDuration`): 2h, 5m, 10s or 1500ms.
local function human(ms)
  if ms == 0 then return '0s' end
  for _, u in ipairs({{'h', 3600000}, {'m', 60000}, {'s', 1000}}) do
    if ms % u[2] == 0 then return string.format('%d%s', ms / u[2], u[1]) end
  end
  return string.format('%dms', ms)
end
