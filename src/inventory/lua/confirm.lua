-- Reservation -> sold, after PostgreSQL committed the order. Idempotent.
-- An order admitted before a rebuild (another epoch) is already counted in
-- the rebuilt counters through PostgreSQL, or lost with them: only its status moves.
-- KEYS: 1 product, 2 deadlines, 3 order, 4 sale
-- ARGV: 1 order id, 2 completed_at ms, 3 payment ref ('' = none),
--       4 the key's final answer ('' = leave it), 5 its ttl s
local o = redis.call('HMGET', KEYS[3], 'st', 'qty', 'ep')
if not o[1] then return {'missing'} end
if o[1] == 'reserved' or o[1] == 'paying' then
  if o[3] == redis.call('HGET', KEYS[4], 'epoch') then
    local qty = tonumber(o[2])
    redis.call('HINCRBY', KEYS[1], 'reserved', -qty)
    redis.call('HINCRBY', KEYS[1], 'sold', qty)
    redis.call('HINCRBY', KEYS[1], 'ver', 1)
  end
  redis.call('HSET', KEYS[3], 'st', 'completed', 'cat', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], 'pref', ARGV[3]) end
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif o[1] ~= 'completed' then
  return {'state', o[1]}
end
if ARGV[4] ~= '' then
  local ikey = redis.call('HGET', KEYS[3], 'ikey')
  if ikey then redis.call('SET', ikey, ARGV[4], 'EX', tonumber(ARGV[5])) end
end
return {'ok', unpack(redis.call('HMGET', KEYS[1], 'stock', 'remaining', 'reserved', 'sold', 'status', 'ver'))}
