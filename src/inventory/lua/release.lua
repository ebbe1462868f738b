-- Give an admission's stock and limit back (cancel, expiry, refused commit).
-- An order of another epoch (admitted before a rebuild) holds nothing in the
-- rebuilt counters: only its status moves.
-- KEYS: 1 product, 2 holdings(sku), 3 deadlines, 4 order, 5 sale
-- ARGV: 1 order id, 2 new status, 4 seconds the settled record is kept,
--       3 'reserved' (cancel), 'holding' (any state
--       holding stock) or 'refused' (like holding, but PostgreSQL refused the
--       order: its units were sold through orders the counters missed, so
--       they move to sold instead of back on sale)
local o = redis.call('HMGET', KEYS[4], 'st', 'qty', 'uid', 'ikey', 'ep')
if not o[1] then return {'missing'} end
local st = o[1]
local ok = st == 'reserved' or (ARGV[3] ~= 'reserved' and st == 'paying')
if not ok then return {'state', st} end
if o[5] == redis.call('HGET', KEYS[5], 'epoch') then
  local qty = tonumber(o[2])
  if ARGV[3] == 'refused' then
    redis.call('HINCRBY', KEYS[1], 'sold', qty)
  else
    redis.call('HINCRBY', KEYS[1], 'remaining', qty)
  end
  redis.call('HINCRBY', KEYS[1], 'reserved', -qty)
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
  if redis.call('HINCRBY', KEYS[2], o[3], -qty) <= 0 then redis.call('HDEL', KEYS[2], o[3]) end
end
redis.call('HSET', KEYS[4], 'st', ARGV[2])
-- Settled: its buyer has had the answer; the record goes soon, not in a day.
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[1])
-- A key still pending for this order is forgotten, so a retry is a fresh attempt.
local ikey = o[4]
local v = redis.call('GET', ikey)
if v and string.sub(v, -(#ARGV[1] + 9)) == '\npending\n' .. ARGV[1] then redis.call('DEL', ikey) end
return {'ok', unpack(redis.call('HMGET', KEYS[1], 'stock', 'remaining', 'reserved', 'sold', 'status', 'ver'))}
