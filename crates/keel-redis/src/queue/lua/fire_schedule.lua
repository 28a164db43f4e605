-- Fires a schedule if its next tick is still the one read: adds its job and moves it on.
-- ARGV: now, name, the tick read, the schedule's new JSON, its new next tick ('' for none),
-- then the job (10 arguments, see `add_jobs`). Returns 1 if it fired, 0 if another instance
-- did.
local now, name = tonumber(ARGV[1]), ARGV[2]
if redis.call('HGET', B .. 'N', name) ~= ARGV[3] then return 0 end
add_jobs(ARGV[1], 6, 1)
redis.call('HSET', B .. 'S', name, ARGV[4])
if ARGV[5] == '' then redis.call('HDEL', B .. 'N', name) else redis.call('HSET', B .. 'N', name, ARGV[5]) end
return 1
