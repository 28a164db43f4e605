-- Deletes up to ARGV[1] jobs of the queue, in any state; once none are left, every key of the
-- queue. Returns how many jobs it deleted.
local limit = tonumber(ARGV[1])
local deleted = 0
-- The lists first, from their ends (no scan of a list per job).
for _, list in ipairs({'wl', 'c', 'f', 'x'}) do
  if deleted < limit then
    local members = redis.call('LPOP', B .. list, limit - deleted) or {}
    local ids = {}
    for k, m in ipairs(members) do
      if list == 'wl' then ids[k] = string.sub(m, 33) else ids[k] = m end
    end
    delete_jobs(ids, true)
    deleted = deleted + #ids
  end
end
if deleted < limit then
  local ids = {}
  for k, m in ipairs(redis.call('ZRANGE', B .. 'i', 0, limit - deleted - 1)) do ids[k] = string.sub(m, 13) end
  delete_jobs(ids)
  deleted = deleted + #ids
end
if deleted < limit then
  for _, g in ipairs(redis.call('HKEYS', B .. 'g')) do redis.call('DEL', B .. 's:' .. g) end
  for _, name in ipairs(COLUMNS) do redis.call('UNLINK', col(name)) end
  redis.call('DEL', M, B .. 'g', B .. 'w', B .. 'wl', B .. 'r', B .. 'd', B .. 'a', B .. 't',
    B .. 'c', B .. 'f', B .. 'x', B .. 'i', B .. 'u', B .. 's', B .. 'S', B .. 'N')
end
return deleted
