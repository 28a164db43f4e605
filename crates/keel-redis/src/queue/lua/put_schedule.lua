-- Creates or replaces a schedule if it is still as read. ARGV: name, its JSON as read (''
-- for none), the new JSON, its next tick ('' for none). Returns 1, or 0 if it changed
-- meanwhile.
local name = ARGV[1]
if (redis.call('HGET', B .. 'S', name) or '') ~= ARGV[2] then return 0 end
redis.call('HSET', B .. 'S', name, ARGV[3])
if ARGV[4] == '' then redis.call('HDEL', B .. 'N', name) else redis.call('HSET', B .. 'N', name, ARGV[4]) end
redis.call('HINCRBY', M, 'seq', 0)
return 1
