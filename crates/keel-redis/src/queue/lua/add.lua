-- Adds jobs. ARGV: now, count, then 10 per job (see `add_jobs`). Returns the ids.
return add_jobs(ARGV[1], 3, tonumber(ARGV[2]))
