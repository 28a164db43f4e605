-- Sets the queue's limits. ARGV: now, then conc, rmax, rper, gmax, gper ('' for none).
-- Starts still inside the longest window (of active jobs and jobs finished since) count
-- against the new limits.
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
-- Finished lists are newest first: read each until a job finished before the window.
for _, set in ipairs({'c', 'f', 'x'}) do
  local from = 0
  repeat
    local page = redis.call('LRANGE', B .. set, from, from + 99)
    local ends = column('fa', page)
    local older = false
    for k, id in ipairs(page) do
      if tonumber(ends[k] or '0') <= since then older = true; break end
      ids[#ids + 1] = id
    end
    from = from + 100
  until older or #page < 100
end
local leases, groups = column('ls', ids), column('g', ids)
for k, id in ipairs(ids) do
  local _, _, started = lease_parts(leases[k])
  local at = tonumber(started or '0') or 0
  if rper and at > now - rper then redis.call('ZADD', B .. 's', at, id) end
  if gper and groups[k] and at > now - gper then redis.call('ZADD', B .. 's:' .. groups[k], at, id) end
end
return #ids
