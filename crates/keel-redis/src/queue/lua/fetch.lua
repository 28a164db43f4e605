-- Leases ready jobs. ARGV: now, worker, max, lease (ms), token prefix. Returns {id, {column,
-- value, …}, …} of each leased job as it was before the lease: the caller knows what the
-- lease changed (state, one more attempt, start, worker, token `<prefix>.<n>` for the n-th
-- job, expiry).
local now, worker, max, lease, tb = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local meta = redis.call('HMGET', M, 'paused', 'conc', 'rmax', 'rper', 'gmax', 'gper', 'floor')
if meta[1] == '1' or max <= 0 then return {} end
-- Delayed jobs whose time has come are ready (a bounded step; the rest on the next fetch).
local due = redis.call('ZRANGEBYSCORE', B .. 'd', '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  local runs, orders = column('ra', due), column('o', due)
  local waiting, ready, states = {}, {}, {}
  for k, id in ipairs(due) do
    waiting[#waiting + 1] = 0; waiting[#waiting + 1] = orders[k] .. id
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
local picked = {}
if gmax then
  -- Jobs of groups at their limit are passed over, so look further than needed.
  for _, m in ipairs(redis.call('ZRANGE', B .. 'w', 0, budget * 4 + 63)) do
    if #picked == budget then break end
    local g = get('g', string.sub(m, 33))
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
if #picked == 0 then return {} end
local ids = {}
local floor = tonumber(meta[7] or '0')
local raised = false
for n, m in ipairs(picked) do
  ids[n] = string.sub(m, 33)
  local rank = tonumber(string.sub(m, 9, 20), 16)
  if rank > floor then floor = rank; raised = true end
end
local out = read_jobs(ids, {'n', 'p', 'ca', 'o', 'ma', 'bk', 'uk', 'g', 'to', 'ra', 'am', 'pg', 'pd', 'er', 'sl'})
local expires = now + lease
local states, attempts, starts, leases, active, timed, window = {}, {}, {}, {}, {}, {}, {}
for n, id in ipairs(ids) do
  local am, to = 0, nil
  local fields = out[2 * n]
  for k = 1, #fields, 2 do
    if fields[k] == 'am' then am = tonumber(fields[k + 1]) elseif fields[k] == 'to' then to = tonumber(fields[k + 1]) end
  end
  local token = tb .. '.' .. n
  states[#states + 1] = id; states[#states + 1] = 'active'
  attempts[#attempts + 1] = id; attempts[#attempts + 1] = am + 1
  starts[#starts + 1] = id; starts[#starts + 1] = now
  leases[#leases + 1] = id; leases[#leases + 1] = token .. '|' .. expires .. '|' .. worker
  active[#active + 1] = expires; active[#active + 1] = id
  if to then timed[#timed + 1] = now + to; timed[#timed + 1] = id end
  if rmax then window[#window + 1] = now; window[#window + 1] = token end
end
batch('HSET', col('st'), states)
batch('HSET', col('am'), attempts)
batch('HSET', col('sa'), starts)
batch('HSET', col('ls'), leases)
batch('ZREM', B .. 'r', ids)
batch('ZADD', B .. 'a', active)
batch('ZADD', B .. 't', timed)
batch('ZADD', B .. 's', window)
if raised then redis.call('HSET', M, 'floor', floor) end
return out
