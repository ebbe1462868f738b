-- The commit of a payment failed: back to reserved with its old deadline.
-- KEYS: 1 deadlines, 2 order; ARGV: 1 order id
local o = redis.call('HMGET', KEYS[2], 'st', 'pdl')
if o[1] == 'paying' then
  redis.call('HSET', KEYS[2], 'st', 'reserved')
  redis.call('ZADD', KEYS[1], o[2], ARGV[1])
end
return 1
