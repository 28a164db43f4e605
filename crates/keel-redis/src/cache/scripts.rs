//! The Lua scripts behind the Redis tier. An entry is a hash — `v` (the value), `c` (its
//! content type), `t` (its tags, comma-separated); each tag has a set of entry keys in the
//! entry's group (see `keys` for both keys). Scripts keep the two in step: an
//! entry leaves its old tags' sets when it is rewritten or deleted, and a tag's set expires
//! when the last of the TTLs it was given runs out (it lives as long as its longest-lived
//! member could; a member that expired earlier is skipped when the tag is invalidated).

use std::sync::LazyLock;

/// Writes an entry. KEYS: the entry, then the sets of its tags. ARGV: value, content type,
/// TTL in ms (0: none), the tag set prefix, the tags comma-separated. Returns 1 when an entry
/// was replaced, 0 when created.
pub(crate) static SET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local key = KEYS[1]
local existed = redis.call('EXISTS', key)
if existed == 1 then
  local old = redis.call('HGET', key, 't')
  if old then
    for tag in string.gmatch(old, '[^,]+') do redis.call('SREM', ARGV[4] .. tag, key) end
  end
  redis.call('DEL', key)
end
redis.call('HSET', key, 'v', ARGV[1], 'c', ARGV[2], 't', ARGV[5])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
for i = 2, #KEYS do
  local set = KEYS[i]
  local had = redis.call('EXISTS', set)
  redis.call('SADD', set, key)
  if ttl == 0 then
    redis.call('PERSIST', set)
  else
    local left = redis.call('PTTL', set)
    if had == 0 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', set, ttl) end
  end
end
return existed
"#,
    )
});

/// Reads an entry. KEYS: the entry. Returns nil, or {value, content type, tags, PTTL}.
pub(crate) static GET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local r = redis.call('HMGET', KEYS[1], 'v', 'c', 't')
if not r[1] then return nil end
return {r[1], r[2] or '', r[3] or '', redis.call('PTTL', KEYS[1])}
"#,
    )
});

/// Deletes an entry (UNLINK: a large value is freed off Redis's main thread) and takes it out
/// of its tags' sets. KEYS: the entry. ARGV: the tag set
/// prefix, and a tag the entry must carry to be deleted ('' for none). Returns 1 if deleted.
pub(crate) static DELETE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(DELETE_CODE));

/// `SCRIPT LOAD` of [`DELETE`], for pipelines of its calls.
pub(crate) static DELETE_LOAD: LazyLock<redis::Cmd> = LazyLock::new(|| {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(DELETE_CODE);
    cmd
});

const DELETE_CODE: &str = r#"
local key = KEYS[1]
local tags = redis.call('HGET', key, 't')
if not tags then return 0 end
if ARGV[2] ~= '' then
  local carries = false
  for tag in string.gmatch(tags, '[^,]+') do
    if tag == ARGV[2] then carries = true end
  end
  if not carries then return 0 end
end
for tag in string.gmatch(tags, '[^,]+') do redis.call('SREM', ARGV[1] .. tag, key) end
redis.call('UNLINK', key)
return 1
"#;
