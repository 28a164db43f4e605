-- Returns expired leases to waiting (or fails them: out of stalls or attempts) and fails
-- attempts past their timeout, up to 1,000 of each. ARGV: now, max stalls, a random number
-- in [0, 1), the default backoff (JSON). Returns {expired leases handled, timed-out attempts
-- handled}.
local now, max_stalls, random = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stalled = redis.call('ZRANGEBYSCORE', B .. 'a', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(stalled) do
  local _, _, _, worker = lease_parts(get('ls', id))
  worker = worker or '?'
  local stalls = tonumber(get('sl', id) or '0') + 1
  unlease(id)
  put('sl', id, stalls)
  push_error(id, string.format('stalled: the lease of worker %s expired without a report (stall %d)', worker, stalls))
  if get('cx', id) == '1' then
    finish(id, 'cancelled', now)
  elseif stalls > max_stalls or attempts_made(id) >= max_attempts(id) then
    finish(id, 'failed', now)
  else
    to_waiting(id, now)
  end
end
local overdue = redis.call('ZRANGEBYSCORE', B .. 't', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(overdue) do
  local note = 'timed out: the attempt ran longer than the job\'s timeout (' .. human(tonumber(get('to', id))) .. ')'
  local retry = attempts_made(id) < max_attempts(id)
  end_failed(id, now, retry, nil, random, note, ARGV[4])
end
return {#stalled, #overdue}
