-- Take one of a worker's shared slots, as a lease that expires.
--
-- KEYS[1]  the worker's leases (sorted set: lease token -> expiry, unix ms)
-- ARGV[1]  now (unix ms)
-- ARGV[2]  lease token
-- ARGV[3]  lease time to live (ms)
-- ARGV[4]  the worker's slot count
-- Returns {1, leases held} when taken (or already held: renewed), else
-- {0, the earliest expiry among the holders}. Expired leases (their daemon
-- or client died without releasing) free their slot here, never earlier.

local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or held < capacity then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return { 1, redis.call('ZCARD', KEYS[1]) }
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return { 0, tonumber(first[2]) }
