-- Deletes up to ARGV[1] jobs of the queue, in any state; once none are left, every key of the
-- queue. Returns how many jobs it deleted.
local limit = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', B .. 'i', 0, limit - 1)
delete_jobs(ids)
if #ids < limit then
  for _, g in ipairs(redis.call('HKEYS', B .. 'g')) do redis.call('DEL', B .. 's:' .. g) end
  for _, name in ipairs(COLUMNS) do redis.call('UNLINK', col(name)) end
  redis.call('DEL', M, B .. 'g', B .. 'w', B .. 'r', B .. 'd', B .. 'a', B .. 't', B .. 'c',
    B .. 'f', B .. 'x', B .. 'i', B .. 'u', B .. 's', B .. 'S', B .. 'N')
end
return #ids
