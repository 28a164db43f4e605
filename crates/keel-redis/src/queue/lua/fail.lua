-- Records a failed attempt. ARGV: now, id, token, error, retry (1/0), retry-after ms (''
-- for the backoff), a random number in [0, 1), the default backoff (JSON). Returns {'ok',
-- state, ran ms} or a refusal.
local now, id = tonumber(ARGV[1]), ARGV[2]
local refused = leased(id, ARGV[3], now)
if refused then return refused end
local retry = ARGV[5] == '1' and attempts_made(id) < max_attempts(id)
local _, _, started = lease_parts(get('ls', id))
started = tonumber(started) or now
local state = end_failed(id, now, retry, tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[4], ARGV[8])
return {'ok', state, now - started}
