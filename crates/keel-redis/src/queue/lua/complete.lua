-- Completes active jobs of one queue. ARGV: now, then id, token, result ('' for none) per
-- job. Returns one value per job, flat (a table per job costs more than the rest of the
-- work): the job's lease (token|expiry|started|worker) when it completed, 'cancelled ' and
-- the lease when it was cancelled instead, 'nojob', or 'conflict ' and why. (A lease starts
-- with a hex token, so it is never taken for one of the words.)
--
-- Every value the per-job loop makes costs Redis a string, so the common case makes none: a
-- current lease is told by finding the token at its start and reading its expiry alone, and
-- the lease goes back whole for keel to take the start time from.
local now_s = ARGV[1]
local now = tonumber(now_s)
local n = (#ARGV - 1) / 3
local ids = {}
for k = 1, n do ids[k] = ARGV[3 * k - 1] end
local states, leases = column('st', ids), column('ls', ids)
local cancels, uniques = {}, {}
if has_column('cx') then cancels = column('cx', ids) end
if has_column('uk') then uniques = column('uk', ids) end
local out, done, moved, finished, results, cancelled = {}, {}, {}, {}, {}, {}
local ended = {c = {}, x = {}}
local n_done, n_finished, n_results, n_cancelled, n_c, n_x = 0, 0, 0, 0, 0, 0
for k = 1, n do
  local id, token, ls = ids[k], ARGV[3 * k], leases[k]
  -- The same job twice in one call: the second report finds it finished.
  local st = moved[id] or states[k]
  local current = false
  if st == 'active' and ls and string.find(ls, token, 1, true) == 1
      and string.byte(ls, #token + 1) == 124 then
    local bar = string.find(ls, '|', #token + 2, true)
    current = bar ~= nil and tonumber(string.sub(ls, #token + 2, bar - 1)) > now
  end
  local refused = nil
  if not current then
    local held, expires = lease_parts(ls)
    refused = refusal_of(st, held, expires, token, now)
  end
  if refused then
    if refused[2] then out[k] = refused[1] .. ' ' .. refused[2] else out[k] = refused[1] end
  else
    local state = 'completed'
    if cancels[k] == '1' then
      state = 'cancelled'
      n_x = n_x + 1; ended.x[n_x] = id
      cancelled[n_cancelled + 1] = id; cancelled[n_cancelled + 2] = '100'
      n_cancelled = n_cancelled + 2
      out[k] = 'cancelled ' .. ls
    else
      n_c = n_c + 1; ended.c[n_c] = id
      out[k] = ls
    end
    moved[id] = state
    n_done = n_done + 1; done[n_done] = id
    finished[n_finished + 1] = id; finished[n_finished + 2] = now_s
    n_finished = n_finished + 2
    local result = ARGV[3 * k + 1]
    if result ~= '' then
      results[n_results + 1] = id; results[n_results + 2] = result
      n_results = n_results + 2
    end
    free_unique(uniques[k], id)
  end
end
local states_out, n_out = {}, 0
for id, state in pairs(moved) do
  states_out[n_out + 1] = id; states_out[n_out + 2] = state
  n_out = n_out + 2
end
batch('HSET', col('st'), states_out)
batch('HSET', col('fa'), finished)
batch('HSET', col('rs'), results)
-- A completed job's progress is 100 without being written; a cancelled one's is written.
batch('HSET', col('pg'), cancelled)
batch('ZREM', B .. 'a', done)
if redis.call('EXISTS', B .. 't') == 1 then batch('ZREM', B .. 't', done) end
batch('LPUSH', B .. 'c', ended.c)
batch('LPUSH', B .. 'x', ended.x)
return out
