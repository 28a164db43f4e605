-- Leases ready jobs. ARGV: now, worker, max, lease expiry (Unix ms), lease token, then the
-- names of the columns to return. Returns {the jobs' ids, attempts made with this lease, then
-- each column asked for: its values for those jobs, in order, or 0 when no job of the queue
-- has that column}.
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
local picked, from_sorted, from_plain = {}, {}, 0
local i, j = 1, 1
while #picked < budget and (i <= #sorted or j <= #plain) do
  local m
  if j > #plain or (i <= #sorted and sorted[i] < plain[j]) then
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
      picked[#picked + 1] = m
      from_sorted[#from_sorted + 1] = m
    end
  else
    -- Plain jobs have no group: never held back by a group limit.
    m = plain[j]; j = j + 1
    picked[#picked + 1] = m
    from_plain = from_plain + 1
  end
end
batch('ZREM', B .. 'w', from_sorted)
if from_plain > 0 then redis.call('LTRIM', B .. 'wl', from_plain, -1) end
if #picked == 0 then return {} end
local ids = {}
local floor = tonumber(meta[7] or '0')
local raised = false
local from_sorted_ids = {}
for n, m in ipairs(from_sorted) do from_sorted_ids[n] = string.sub(m, 33) end
for n, m in ipairs(picked) do ids[n] = string.sub(m, 33) end
-- The highest turn handed out: plain jobs are in turn order, so their last is enough.
local function raise(m)
  local rank = tonumber(string.sub(m, 9, 20), 16)
  if rank > floor then floor = rank; raised = true end
end
for _, m in ipairs(from_sorted) do raise(m) end
if from_plain > 0 then raise(plain[from_plain]) end
local attempts_before, timeouts = {}, {}
if has_column('am') then attempts_before = column('am', ids) end
if has_column('to') then timeouts = column('to', ids) end
local made_all = {}
local lease = token .. '|' .. expires_s .. '|' .. now_s .. '|' .. worker
local ATTEMPT = {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10'}
local states, attempts, leases, active, timed, window = {}, {}, {}, {}, {}, {}
for n, id in ipairs(ids) do
  local am = tonumber(attempts_before[n]) or 0
  local made = ATTEMPT[am + 1] or string.format('%d', am + 1)
  made_all[n] = made
  states[#states + 1] = id; states[#states + 1] = 'active'
  attempts[#attempts + 1] = id; attempts[#attempts + 1] = made
  leases[#leases + 1] = id; leases[#leases + 1] = lease
  active[#active + 1] = expires_s; active[#active + 1] = id
  if timeouts[n] then timed[#timed + 1] = now + tonumber(timeouts[n]); timed[#timed + 1] = id end
  if rmax then window[#window + 1] = now_s; window[#window + 1] = token .. id end
end
batch('HSET', col('st'), states)
batch('HSET', col('am'), attempts)
batch('HSET', col('ls'), leases)
batch('ZREM', B .. 'r', from_sorted_ids)
batch('ZADD', B .. 'a', active)
batch('ZADD', B .. 't', timed)
batch('ZADD', B .. 's', window)
if raised then redis.call('HSET', M, 'floor', string.format('%d', floor)) end
local out = {ids, made_all}
for k = 6, #ARGV do
  if has_column(ARGV[k]) then out[#out + 1] = column(ARGV[k], ids) else out[#out + 1] = 0 end
end
return out
