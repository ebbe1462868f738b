-- Change a product's status or stock; nothing if it has no live state.
-- KEYS: 1 product; ARGV: 1 'status' or 'restock', 2 value
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[1] == 'status' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
else
  local add = tonumber(ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'stock', add)
  redis.call('HINCRBY', KEYS[1], 'remaining', add)
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return {'ok', unpack(redis.call('HMGET', KEYS[1], 'stock', 'remaining', 'reserved', 'sold', 'status', 'ver'))}
