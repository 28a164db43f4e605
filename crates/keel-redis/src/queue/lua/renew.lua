-- Extends a lease, or records progress. ARGV: now, id, token, then 'extend' and the lease
-- (ms), or 'progress', the percentage and data ('' for none). Returns {'ok', expiry} or a
-- refusal; a cancelled job refuses both.
local now, id, token = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local refused = leased(id, token, now)
if refused then return refused end
if get('cx', id) == '1' then return {'conflict', 'the job was cancelled'} end
if ARGV[4] == 'extend' then
  local expires = now + tonumber(ARGV[5])
  local _, _, started, worker = lease_parts(get('ls', id))
  put('ls', id, token .. '|' .. expires .. '|' .. started .. '|' .. worker)
  redis.call('ZADD', B .. 'a', expires, id)
  return {'ok', expires}
end
put('pg', id, ARGV[5])
if ARGV[6] == '' then drop('pd', id) else put('pd', id, ARGV[6]) end
return {'ok', 0}
