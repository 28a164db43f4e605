-- Acts on one job by id. ARGV: now, id, then 'cancel', 'promote' or 'retry'. Returns
-- {'ok', state} or a refusal.
local now, id, action = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local st = get('st', id)
if not st then return {'nojob'} end
if action == 'cancel' then
  if st == 'active' then
    put('cx', id, 1)
    return {'ok', 'active'}
  elseif st == 'waiting' then
    local member = order_of(id) .. id
    if redis.call('ZREM', B .. 'w', member) == 0 then redis.call('LREM', B .. 'wl', 1, member) end
    redis.call('ZREM', B .. 'r', id)
  elseif st == 'delayed' then
    redis.call('ZREM', B .. 'd', id)
  else
    return {'ok', st}
  end
  finish(id, 'cancelled', now)
  return {'ok', 'cancelled'}
elseif action == 'promote' then
  if st ~= 'delayed' then
    return {'conflict', 'only a delayed job can be promoted; this one is ' .. st}
  end
  redis.call('ZREM', B .. 'd', id)
  to_waiting(id, now)
  return {'ok', 'waiting'}
end
if st ~= 'failed' and st ~= 'cancelled' then
  return {'conflict', 'only a failed or cancelled job can be retried; this one is ' .. st}
end
redis.call('LREM', B .. FINISHED[st], 1, id)
for _, name in ipairs({'sl', 'cx', 'pg', 'fa', 'pd'}) do drop(name, id) end
reset_attempts(id)
to_waiting(id, now)
local uk = get('uk', id)
if uk then redis.call('HSETNX', B .. 'u', uk, id) end
return {'ok', 'waiting'}
