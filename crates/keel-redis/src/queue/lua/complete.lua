-- Completes active jobs of one queue. ARGV: now, then id, token, result ('' for none) per
-- job. Returns two values per job, flat (a table per job costs more than the rest of the
-- work): its new state and when its lease started (Unix ms, as text), or 'nojob' and '', or
-- 'conflict' and why.
local now_s = ARGV[1]
local now = tonumber(now_s)
local ids = {}
for a = 2, #ARGV, 3 do ids[#ids + 1] = ARGV[a] end
local states, leases = column('st', ids), column('ls', ids)
local cancels, uniques = {}, {}
if has_column('cx') then cancels = column('cx', ids) end
if has_column('uk') then uniques = column('uk', ids) end
local out, done, moved, finished, results, cancelled = {}, {}, {}, {}, {}, {}
local ended = {c = {}, x = {}}
for k, id in ipairs(ids) do
  local a = 2 + (k - 1) * 3
  -- The same job twice in one call: the second report finds it finished.
  local held, expires, started = lease_parts(leases[k])
  local refused = refusal_of(moved[id] or states[k], held, expires, ARGV[a + 1], now)
  if refused then
    out[2 * k - 1] = refused[1]; out[2 * k] = refused[2] or ''
  else
    local state, set = 'completed', ended.c
    if cancels[k] == '1' then
      state, set = 'cancelled', ended.x
      cancelled[#cancelled + 1] = id; cancelled[#cancelled + 1] = '100'
    end
    moved[id] = state
    done[#done + 1] = id
    finished[#finished + 1] = id; finished[#finished + 1] = now_s
    if ARGV[a + 2] ~= '' then results[#results + 1] = id; results[#results + 1] = ARGV[a + 2] end
    set[#set + 1] = id
    free_unique(uniques[k], id)
    out[2 * k - 1] = state; out[2 * k] = started or ''
  end
end
local states_out = {}
for id, state in pairs(moved) do states_out[#states_out + 1] = id; states_out[#states_out + 1] = state end
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
