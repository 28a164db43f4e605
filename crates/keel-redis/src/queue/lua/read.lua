-- Reads jobs. ARGV: their ids. Returns {id, {column, value, …}, …} (no columns: no job).
local ids = {}
for k = 1, #ARGV do ids[k] = ARGV[k] end
return read_jobs(ids)
