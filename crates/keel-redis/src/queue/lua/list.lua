-- One step of a listing: examines up to ARGV[3] jobs added before add order ARGV[1] (12 hex
-- digits; '' from the newest), newest first, keeping those that match — state ARGV[4], name
-- ARGV[5], group ARGV[6] ('' for any), and search ARGV[7] ('' for none: the id, or text in the
-- name or payload, ASCII case ignored) — until ARGV[2] match. Returns {the add order of the
-- last job examined, 1 if no job is left, the id and columns of each matching job…}.
local before, want, examine = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state, name, group, search = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local needle = string.lower(search)
local max = '+'
if before ~= '' then max = '(' .. before end
local page = redis.call('ZREVRANGEBYLEX', B .. 'i', max, '-', 'LIMIT', 0, examine)
local ids = {}
for k, m in ipairs(page) do ids[k] = string.sub(m, 13) end
local states, names, groups = column('st', ids), column('n', ids), column('g', ids)
local payloads = {}
if search ~= '' then payloads = column('p', ids) end
local matched = {}
local last = nil
local examined = 0
for k, id in ipairs(ids) do
  examined = k
  last = string.sub(page[k], 1, 12)
  local ok = (state == '' or states[k] == state) and (name == '' or names[k] == name)
    and (group == '' or groups[k] == group)
  if ok and search ~= '' then
    ok = id == search or string.find(string.lower(names[k] or ''), needle, 1, true) ~= nil
      or string.find(string.lower(payloads[k] or ''), needle, 1, true) ~= nil
  end
  if ok then
    matched[#matched + 1] = id
    if #matched == want then break end
  end
end
local out = {last or '', 0}
-- No job is left when the step read fewer than it asked for and examined all of them.
if #ids < examine and examined == #ids then out[2] = 1 end
for _, v in ipairs(read_jobs(matched)) do out[#out + 1] = v end
return out
