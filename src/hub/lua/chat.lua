-- Post a chat message: ban, mute, slow mode and rate checks, then number it,
-- keep it in the sale's capped stream and publish it, all in one step, so
-- every node receives a sale's messages in seq order.
-- KEYS: 1 seq, 2 stream, 3 bans, 4 mute(user), 5 slow(user), 6 settings, 7 rate(user), 8 sale,
--       9 the sale's event channel (a key, so a cluster runs this on its slot)
-- A sale without live state (Redis lost it) is rebuilt first: the rebuild
-- puts the seq counter above every seq given before.
if redis.call('EXISTS', KEYS[8]) == 0 then return {'missing'} end
-- ARGV: 1 user, 2 now ms, 3 moderator '1'/'0', 4 rate per s, 5 burst,
--       6 frame prefix, 7 frame suffix, 8 envelope prefix, 9 envelope suffix,
--       10 PUBLISH or SPUBLISH (a cluster's sharded channel), 11 history length
-- A ban never locks out whoever may manage the sale.
if ARGV[3] ~= '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'banned'} end
local now = tonumber(ARGV[2])
if ARGV[3] ~= '1' then
  local muted = redis.call('PTTL', KEYS[4])
  if muted > 0 then return {'muted', tostring(muted)} end
  local slow = tonumber(redis.call('HGET', KEYS[6], 'slow_mode') or '0')
  if slow > 0 then
    -- The mark holds the time of the user's last post in slow mode, so a
    -- host who shortens slow mode shortens every wait at once.
    local last = redis.call('GET', KEYS[5])
    if last then
      local wait = slow * 1000 - (now - tonumber(last))
      if wait > 0 then return {'slow_mode', tostring(wait)} end
    end
  end
  local rate, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
  local b = redis.call('HMGET', KEYS[7], 't', 'ts')
  local tokens = tonumber(b[1] or burst)
  local ts = tonumber(b[2] or now)
  tokens = math.min(burst, tokens + math.max(0, now - ts) / 1000 * rate)
  if tokens < 1 then
    return {'rate_limited', tostring(math.ceil((1 - tokens) / rate * 1000))}
  end
  redis.call('HSET', KEYS[7], 't', tostring(tokens - 1), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[7], math.ceil(burst / rate * 1000) + 1000)
  if slow > 0 then redis.call('SET', KEYS[5], tostring(now), 'PX', slow * 1000) end
end
-- '%.0f': Lua 5.1 prints a large number (a rebuilt counter) in exponent form.
local n = string.format('%.0f', redis.call('INCR', KEYS[1]))
local frame = ARGV[6] .. n .. ARGV[7]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[11], n .. '-0', 'f', frame)
redis.call(ARGV[10], KEYS[9], ARGV[8] .. frame .. ARGV[9])
return {'ok', n}
