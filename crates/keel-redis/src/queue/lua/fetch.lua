-- Leases ready jobs. ARGV: now, worker, max, lease expiry (Unix ms), lease token, then the
-- names of the columns to return. Returns {the jobs' ids, the attempts made with this lease
-- of those past their first (flat: position from 0, count; every other job's is 1), then each
-- column asked for: its values for those jobs, in order, or 0 when no job of the queue has that
-- column}.
local now_s, worker, max, expires_s, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local now = tonumber(now_s)
local meta = redis.call('HMGET', M, 'paused', 'conc', 'rmax', 'rper', 'gmax', 'gper', 'floor')
if meta[1] == '1' or max <= 0 then return {} end
-- Delayed jobs whose time has come are ready (a bounded step; the rest on the next fetch).
local due = redis.call('ZRANGEBYSCORE', B .. 'd', '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  local runs, descs = column('ra', due), column('d', due)
  local waiting, ready, states = {}, {}, {}
  for k, id in ipairs(due) do
    local _, _, o = described(descs[k])
    waiting[#waiting + 1] = '0'; waiting[#waiting + 1] = o .. id
    ready[#ready + 1] = runs[k]; ready[#ready + 1] = id
    states[#states + 1] = id; states[#states + 1] = 'waiting'
  end
  batch('HSET', col('st'), states)
  batch('ZADD', B .. 'w', waiting)
  batch('ZADD', B .. 'r', ready)
  batch('ZREM', B .. 'd', due)
end
local budget = max
local conc, rmax, rper, gmax, gper = tonumber(meta[2]), tonumber(meta[3]), tonumber(meta[4]), tonumber(meta[5]), tonumber(meta[6])
if conc then budget = math.min(budget, conc - redis.call('ZCARD', B .. 'a')) end
if rmax then
  redis.call('ZREMRANGEBYSCORE', B .. 's', '-inf', now - rper)
  budget = math.min(budget, rmax - redis.call('ZCARD', B .. 's'))
end
if budget <= 0 then return {} end
-- The next jobs: the heads of `w` and of the list `wl` merged (members compare as their
-- orders). Jobs of groups at their limit are passed over, so look further than needed.
local look = budget
if gmax then look = budget * 4 + 64 end
local sorted = {}
if redis.call('ZCARD', B .. 'w') > 0 then sorted = redis.call('ZRANGE', B .. 'w', 0, look - 1) end
local plain = redis.call('LRANGE', B .. 'wl', 0, look - 1)
-- Tables are filled by index (`#t` is a search in Lua 5.1, and these loops run per job).
local picked, from_sorted, n_picked, n_sorted, from_plain = {}, {}, 0, 0, 0
local n_sorted_head, n_plain = #sorted, #plain
local i, j = 1, 1
while n_picked < budget and (i <= n_sorted_head or j <= n_plain) do
  local m
  if j > n_plain or (i <= n_sorted_head and sorted[i] < plain[j]) then
    m = sorted[i]; i = i + 1
    local admitted = true
    if gmax then
      local g = get('g', string.sub(m, 33))
      if g then
        redis.call('ZREMRANGEBYSCORE', B .. 's:' .. g, '-inf', now - gper)
        admitted = redis.call('ZCARD', B .. 's:' .. g) < gmax
        if admitted then redis.call('ZADD', B .. 's:' .. g, now_s, token .. string.sub(m, 33)) end
      end
    end
    if admitted then
      n_picked = n_picked + 1; picked[n_picked] = m
      n_sorted = n_sorted + 1; from_sorted[n_sorted] = n_picked
    end
  else
    -- Plain jobs have no group: never held back by a group limit.
    m = plain[j]; j = j + 1
    n_picked = n_picked + 1; picked[n_picked] = m
    from_plain = from_plain + 1
  end
end
if from_plain > 0 then redis.call('LTRIM', B .. 'wl', from_plain, -1) end
if n_picked == 0 then return {} end
local ids = {}
for n = 1, n_picked do ids[n] = string.sub(picked[n], 33) end
local floor = tonumber(meta[7] or '0')
local raised = false
-- The highest turn handed out: plain jobs are in turn order, so their last is enough.
local function raise(m)
  local rank = tonumber(string.sub(m, 9, 20), 16)
  if rank > floor then floor = rank; raised = true end
end
-- Jobs from the sorted set: their members leave it and their ready times go; they may have
-- run before, so their attempts made are read and written. Jobs of the plain list are always
-- new: their first attempt writes no count (their lease says it; see `am` in the prelude).
local ATTEMPT = {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10'}
-- The reply names only counts past 1 (`again`): most jobs are on their first attempt.
local sorted_members, sorted_ids, attempts, again = {}, {}, {}, {}
for k = 1, n_sorted do
  local n = from_sorted[k]
  sorted_members[k] = picked[n]; sorted_ids[k] = ids[n]
  raise(picked[n])
end
if from_plain > 0 then raise(plain[from_plain]) end
batch('ZREM', B .. 'w', sorted_members)
batch('ZREM', B .. 'r', sorted_ids)
if n_sorted > 0 then
  local before, leased = {}, column('ls', sorted_ids)
  if has_column('am') then before = column('am', sorted_ids) end
  for k = 1, n_sorted do
    local count = (tonumber(before[k]) or (leased[k] and 1 or 0)) + 1
    local made = ATTEMPT[count] or string.format('%d', count)
    attempts[2 * k - 1] = sorted_ids[k]; attempts[2 * k] = made
    if count > 1 then again[#again + 1] = from_sorted[k] - 1; again[#again + 1] = made end
  end
end
local timeouts = {}
if has_column('to') then timeouts = column('to', ids) end
local lease = token .. '|' .. expires_s .. '|' .. now_s .. '|' .. worker
local states, leases, active, timed, window = {}, {}, {}, {}, {}
local n_timed = 0
for n = 1, n_picked do
  local id = ids[n]
  local a, b = 2 * n - 1, 2 * n
  states[a] = id; states[b] = 'active'
  leases[a] = id; leases[b] = lease
  active[a] = expires_s; active[b] = id
  if timeouts[n] then
    timed[n_timed + 1] = now + tonumber(timeouts[n]); timed[n_timed + 2] = id
    n_timed = n_timed + 2
  end
  if rmax then window[a] = now_s; window[b] = token .. id end
end
batch('HSET', col('st'), states)
batch('HSET', col('am'), attempts)
batch('HSET', col('ls'), leases)
batch('ZADD', B .. 'a', active)
batch('ZADD', B .. 't', timed)
batch('ZADD', B .. 's', window)
if raised then redis.call('HSET', M, 'floor', string.format('%d', floor)) end
local out = {ids, again}
for k = 6, #ARGV do
  if has_column(ARGV[k]) then out[#out + 1] = column(ARGV[k], ids) else out[#out + 1] = 0 end
end
return out
