-- Admit one buy attempt: idempotency, sale live, product on sale, stock,
-- per-user limit; then reserve. O(1), all keys under the sale's hash tag.
-- KEYS: 1 sale, 2 product, 3 holdings(sku), 4 idem, 5 deadlines, 6 order, 7 bans,
--       8 the user's keys in the sale (sorted by first use)
-- ARGV: 1 user, 2 qty, 3 fingerprint, 4 order id, 5 deadline ms,
--       6 order json, 7 final answer ('' = pending), 8 key ttl s, 9 idem key name, 10 sku,
--       11 keys kept per user and sale, 12 now ms,
--       13 '1' for a remedy (a claim's reship): stock alone is checked, the
--          sale may have ended and the product closed since the buy
local idem = redis.call('GET', KEYS[4])
if idem then return {'replay', idem} end
local fp, ttl = ARGV[3], tonumber(ARGV[8])
-- A user's answers in a sale are capped: past the cap the oldest is
-- forgotten, so fresh keys in a loop cannot fill Redis for a day.
local function remember()
  redis.call('ZADD', KEYS[8], ARGV[12], KEYS[4])
  redis.call('EXPIRE', KEYS[8], ttl)
  if redis.call('ZCARD', KEYS[8]) > tonumber(ARGV[11]) then
    local old = redis.call('ZPOPMIN', KEYS[8])
    if old[1] then redis.call('DEL', old[1]) end
  end
end
local function reject(code, a, b)
  local v = fp .. '\nrej\n' .. code .. '\n' .. (a or 0) .. '\n' .. (b or 0)
  redis.call('SET', KEYS[4], v, 'EX', ttl)
  remember()
  return {'rej', code, a or 0, b or 0}
end
local s = redis.call('HMGET', KEYS[1], 'status', 'epoch')
local sale = s[1]
if not sale then return {'missing'} end
local remedy = ARGV[13] == '1'
if not remedy and redis.call('SISMEMBER', KEYS[7], ARGV[1]) == 1 then return reject('banned') end
if not remedy and sale ~= 'live' then return reject('sale_not_live') end
-- Everything the answer needs is read here, so the counters are written
-- with one HSET and the level is answered without reading them again.
local p = redis.call('HMGET', KEYS[2], 'status', 'remaining', 'limit', 'stock', 'reserved',
  'sold', 'ver')
-- The node only asks for SKUs the catalog knows: a missing product is lost state.
if not p[1] then return {'missing', s[2]} end
if not remedy and p[1] ~= 'on_sale' then return reject('not_on_sale') end
local qty = tonumber(ARGV[2])
if tonumber(p[2]) < qty then return reject('sold_out') end
local bought = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local limit = tonumber(p[3])
if not remedy and bought + qty > limit then return reject('limit_exceeded', bought, limit) end
local remaining = tonumber(p[2]) - qty
local reserved = tonumber(p[5] or '0') + qty
redis.call('HSET', KEYS[2], 'remaining', remaining, 'reserved', reserved)
-- `ver` continues from an epoch (microseconds): past what Lua prints
-- without an exponent, so Redis counts it.
local ver = redis.call('HINCRBY', KEYS[2], 'ver', 1)
redis.call('HINCRBY', KEYS[3], ARGV[1], qty)
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
redis.call('HSET', KEYS[6], 'st', 'reserved', 'qty', qty, 'uid', ARGV[1], 'sku', ARGV[10],
  'j', ARGV[6], 'ik', ARGV[9], 'ikey', KEYS[4], 'ep', s[2])
redis.call('EXPIRE', KEYS[6], ttl)
if ARGV[7] ~= '' then
  redis.call('SET', KEYS[4], fp .. '\nok\n' .. ARGV[7], 'EX', ttl)
else
  redis.call('SET', KEYS[4], fp .. '\npending\n' .. ARGV[4], 'EX', ttl)
end
remember()
return {'ok', s[2], p[4], tostring(remaining), tostring(reserved), p[6] or '0', p[1], ver}
