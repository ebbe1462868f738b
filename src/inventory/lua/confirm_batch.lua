-- Reservations -> sold for a batch of one SKU's orders that PostgreSQL has
-- committed, in one call: the product's counters move once for the batch.
-- Idempotent, like confirm.lua for each order.
-- KEYS: 1 product, 2 deadlines, 3 sale, then for order i (from 0):
--       4 + 2i its order hash, 5 + 2i its idempotency key
-- ARGV: 1 the answers' ttl s, then for order i: 2 + 3i order id,
--       3 + 3i completed_at ms, 4 + 3i the key's final answer ('' = leave it)
local epoch = redis.call('HGET', KEYS[3], 'epoch')
local moved, done = 0, {}
for i = 0, (#KEYS - 3) / 2 - 1 do
  local okey, ikey = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local id, answer = ARGV[2 + 3 * i], ARGV[4 + 3 * i]
  local o = redis.call('HMGET', okey, 'st', 'qty', 'ep')
  local st = o[1]
  if st == 'reserved' or st == 'paying' then
    -- An order of another epoch is counted through PostgreSQL already.
    if o[3] == epoch then moved = moved + tonumber(o[2]) end
    redis.call('HSET', okey, 'st', 'completed', 'cat', ARGV[3 + 3 * i])
    done[#done + 1] = id
    st = 'completed'
  end
  if st == 'completed' and answer ~= '' then
    redis.call('SET', ikey, answer, 'EX', tonumber(ARGV[1]))
  end
end
if #done > 0 then redis.call('ZREM', KEYS[2], unpack(done)) end
if moved > 0 then
  redis.call('HINCRBY', KEYS[1], 'reserved', -moved)
  redis.call('HINCRBY', KEYS[1], 'sold', moved)
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
end
return {'ok', unpack(redis.call('HMGET', KEYS[1], 'stock', 'remaining', 'reserved', 'sold', 'status', 'ver'))}
