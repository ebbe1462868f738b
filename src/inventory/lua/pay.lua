-- Begin paying a reservation: the reaper leaves it alone for a lease.
-- KEYS: 1 deadlines, 2 order
-- ARGV: 1 order id, 2 now ms, 3 lease ms
local st = redis.call('HGET', KEYS[2], 'st')
if not st then return {'missing'} end
if st ~= 'reserved' then return {st} end
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) <= tonumber(ARGV[2]) then return {'expired'} end
redis.call('HSET', KEYS[2], 'st', 'paying', 'pdl', deadline)
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
return {'started'}
