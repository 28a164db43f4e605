-- Puts up to 1,000 failed jobs back to waiting with fresh attempts. ARGV: now. Returns how
-- many (call again while it answers 1,000).
local now = tonumber(ARGV[1])
local ids = redis.call('RPOP', B .. 'f', 1000) or {}
for _, id in ipairs(ids) do
  for _, name in ipairs({'sl', 'cx', 'pg', 'fa', 'pd'}) do drop(name, id) end
  reset_attempts(id)
  to_waiting(id, now)
  local uk = get('uk', id)
  if uk then redis.call('HSETNX', B .. 'u', uk, id) end
end
return #ids
