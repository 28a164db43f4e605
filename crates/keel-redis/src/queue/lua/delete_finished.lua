-- Deletes finished jobs. ARGV: 'clean', the state's set letter, the newest finish time to
-- delete (inclusive); or 'prune', room, now, completed to keep, failed to keep, the oldest
-- finish time to keep ('' for no age limit). Returns how many it deleted (clean: at most
-- 1,000 a call).
local function gone(ids)
  delete_jobs(ids)
  return #ids
end
if ARGV[1] == 'clean' then
  return gone(redis.call('ZRANGEBYSCORE', B .. ARGV[2], '-inf', ARGV[3], 'LIMIT', 0, 1000))
end
local room = tonumber(ARGV[2])
local deleted = 0
local before = ARGV[6]
for _, kind in ipairs({{'c', tonumber(ARGV[4])}, {'f', tonumber(ARGV[5])}, {'x', tonumber(ARGV[5])}}) do
  local set, keep = B .. kind[1], kind[2]
  if before ~= '' and room - deleted > 0 then
    deleted = deleted + gone(redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. before, 'LIMIT', 0, room - deleted))
  end
  if room - deleted <= 0 then return deleted end
  local excess = redis.call('ZCARD', set) - keep
  if excess > 0 then
    deleted = deleted + gone(redis.call('ZRANGE', set, 0, math.min(excess, room - deleted) - 1))
  end
end
return deleted
