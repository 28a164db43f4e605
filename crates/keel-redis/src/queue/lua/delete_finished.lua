-- Deletes finished jobs from the old end of their lists. ARGV: 'clean', the state's list
-- letter, the newest finish time to delete (inclusive); or 'prune', room, completed to keep,
-- failed to keep, the oldest finish time to keep ('' for no age limit). Returns how many it
-- deleted (at most 1,000 a call for clean, `room` for prune).

-- Pops, from the old end of `list`, up to `max` jobs that finished at or before `cutoff`.
local function pop_finished_by(list, cutoff, max)
  local ids = {}
  while #ids < max do
    local tail = redis.call('LRANGE', list, -math.min(100, max - #ids), -1)
    if #tail == 0 then break end
    local ends = column('fa', tail)
    local n = 0
    for k = #tail, 1, -1 do
      if tonumber(ends[k] or '0') > cutoff then break end
      n = n + 1
    end
    if n == 0 then break end
    for k = #tail, #tail - n + 1, -1 do ids[#ids + 1] = tail[k] end
    redis.call('RPOP', list, n)
    if n < #tail then break end
  end
  delete_jobs(ids, true)
  return #ids
end

if ARGV[1] == 'clean' then
  return pop_finished_by(B .. ARGV[2], tonumber(ARGV[3]), 1000)
end
local room = tonumber(ARGV[2])
local deleted = 0
local before = tonumber(ARGV[5])
for _, kind in ipairs({{'c', tonumber(ARGV[3])}, {'f', tonumber(ARGV[4])}, {'x', tonumber(ARGV[4])}}) do
  local list, keep = B .. kind[1], kind[2]
  if before and room - deleted > 0 then
    deleted = deleted + pop_finished_by(list, before - 1, room - deleted)
  end
  if room - deleted <= 0 then return deleted end
  local excess = redis.call('LLEN', list) - keep
  if excess > 0 then
    local ids = redis.call('RPOP', list, math.min(excess, room - deleted))
    delete_jobs(ids, true)
    deleted = deleted + #ids
  end
end
return deleted
