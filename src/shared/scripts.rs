//! The Lua scripts the shared state runs, each in one round trip and
//! atomically (Redis runs one script at a time). `KEYS` and `ARGV` are
//! built by the methods of [`super::Shared`] that name them.

/// Takes a token from each bucket, records last use, reads and appends
/// the histories (each sent back as its length, then the place and entry
/// of every call with step bits: most calls have none, `t||nonce`). `{0}`: the session was ended; `{4}`: Redis does not know
/// it (never opened there, or idle past its last use, or ended long ago);
/// `{1, i, ms}`: bucket `i` is empty. See the module docs; `KEYS` and
/// `ARGV` are built by [`Shared::admit`]; each bucket brings its rate,
/// size and how long its key outlives its last use (computed here, not in
/// Lua, so a tiny rate cannot make it infinite).
pub(super) const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if KEYS[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
if KEYS[2] ~= '' and redis.call('EXISTS', KEYS[2]) == 0 then return {4} end
local n = tonumber(ARGV[1])
local left = {}
for i = 1, n do
  local rate = tonumber(ARGV[4 + 3 * i])
  local burst = tonumber(ARGV[5 + 3 * i])
  local b = redis.call('HMGET', KEYS[6 + i], 't', 'at')
  local tokens = tonumber(b[1]) or burst
  local at = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  if tokens < 1 then return {1, i, math.min(math.ceil((1 - tokens) * 1000 / rate), 86400000)} end
  left[i] = tokens - 1
end
for i = 1, n do
  redis.call('HSET', KEYS[6 + i], 't', tostring(left[i]), 'at', now)
  redis.call('PEXPIRE', KEYS[6 + i], ARGV[6 + 3 * i])
end
local idle = tonumber(ARGV[5])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], now, 'PX', idle, 'XX') end
if KEYS[5] ~= '' then
  redis.call('ZADD', KEYS[5], 'XX', now + idle, ARGV[6])
  redis.call('PEXPIRE', KEYS[5], idle)
end
local cap = tonumber(ARGV[2])
local out = {2, now, {}, {}}
if cap > 0 then
  local entry = now .. ARGV[3]
  for k = 3, 4 do
    if KEYS[k] ~= '' then
      local all = redis.call('LRANGE', KEYS[k], 0, cap - 1)
      local o = {#all}
      for i = 1, #all do
        if not string.find(all[i], '||', 1, true) then
          o[#o + 1] = i - 1
          o[#o + 1] = all[i]
        end
      end
      out[k] = o
      redis.call('LPUSH', KEYS[k], entry)
      redis.call('LTRIM', KEYS[k], 0, cap - 1)
      redis.call('PEXPIRE', KEYS[k], ARGV[4])
    end
  end
  out[5] = entry
end
return out
"#;

/// Takes back what [`ADMIT`] did for a call the rules refused: its history
/// entry and one token of each bucket.
pub(super) const UNDO: &str = r#"
for k = 1, 2 do
  if KEYS[k] ~= '' then redis.call('LREM', KEYS[k], 1, ARGV[1]) end
end
for i = 3, #KEYS do
  local burst = tonumber(ARGV[i - 1])
  local t = tonumber(redis.call('HGET', KEYS[i], 't'))
  if t then redis.call('HSET', KEYS[i], 't', tostring(math.min(burst, t + 1))) end
end
return 0
"#;

/// A session opened or rebuilt: refused if it was ended, if its token is
/// older than `session_idle_timeout` (`ARGV[4]`) and no replica recorded a
/// use within it, or if its principal has `cap` sessions open on all
/// replicas together. It holds its principal's slot for `ARGV[5]` ms (a
/// call extends that to the idle timeout).
pub(super) const OPEN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local seen = redis.call('EXISTS', KEYS[2])
if seen == 0 and ARGV[4] == '1' then return {3} end
local idle = tonumber(ARGV[3])
if KEYS[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then
    local open = redis.call('ZCARD', KEYS[3])
    if open >= tonumber(ARGV[2]) then return {1, open} end
  end
  redis.call('ZADD', KEYS[3], 'GT', now + tonumber(ARGV[5]), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], idle)
end
redis.call('SET', KEYS[2], now, 'PX', idle)
return {2, seen}
"#;

/// The sessions a replica holds, checked in one go: `KEYS` are pairs of
/// ended (`r:`) and last-use (`u:`) keys; `ARGV[i + 1]` is `1` when session
/// `i` was used on this replica lately (its last use is recorded, if Redis
/// still has it). Answers 1 per session still alive, 0 per session ended
/// or idle on every replica.
pub(super) const REFRESH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, #KEYS / 2 do
  local ended, used = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', ended) == 1 then
    out[i] = 0
  elseif ARGV[i + 1] == '1' then
    out[i] = redis.call('SET', used, now, 'PX', ARGV[1], 'XX') and 1 or 0
  else
    out[i] = redis.call('EXISTS', used)
  end
end
return out
"#;

/// A session ended: recorded for every replica until `ARGV[1]` ms from
/// now, and announced on the channel `ARGV[3]` so that a replica holding
/// it lets it go at once.
pub(super) const END: &str = r#"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('DEL', KEYS[2])
if KEYS[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 0
"#;
