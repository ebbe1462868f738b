-- Take due admissions for the reaper, leasing each so other nodes skip it.
-- KEYS: 1 deadlines; ARGV: 1 now ms, 2 lease ms, 3 max
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], lease, id) end
return due
