-- Attaches the ship-to address to a reservation that is still reserved
-- (not being paid: a payment in progress commits the order as it was).
-- KEYS[1] the order hash; ARGV[1] the address (JSON).
-- Returns 'ok', or the order's state, or 'missing'.
local st = redis.call('HGET', KEYS[1], 'st')
if not st then
  return 'missing'
end
if st ~= 'reserved' then
  return st
end
redis.call('HSET', KEYS[1], 'ship', ARGV[1])
return 'ok'
