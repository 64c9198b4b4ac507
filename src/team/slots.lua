-- A worker's shared slots: leases that expire unless renewed.
--
-- KEYS[1]  the worker's leases (sorted set: lease token -> expiry, unix ms)
-- KEYS[2]  set while a daemon was refused a slot and may be waiting for one
-- ARGV[1]  operation: take | restore | renew | release | none
-- ARGV[2]  now (unix ms)
-- ARGV[3]  lease token
-- ARGV[4]  lease time to live (ms)
-- ARGV[5]  the worker's slot count
-- ARGV[6]  channel to announce a freed slot on
-- ARGV[7]  message announcing it
-- KEYS[2i+1], KEYS[2i+2], ARGV[2i+6], ARGV[2i+7] (i >= 1): slots this
--          daemon's builds gave back since its last call, released first
--          (a worker's leases, its key for waiters, the lease token, the
--          message announcing it), whatever the operation.
--
-- take     {1, leases held} when taken (or already held: renewed), else
--          {0, the earliest expiry among the holders}. Expired leases (their
--          daemon or client died without releasing) free their slot here,
--          never earlier.
-- restore  a build that already runs (its daemon restarted, or Redis lost
--          its leases): held whatever the count; {1, leases held}.
-- renew    pushes a held lease's expiry out (a released one stays
--          released); {1, 0}.
-- release  gives the slot back; a freed slot is announced only when a
--          daemon was refused one since the last announcement, so releases
--          cost the rest of the team nothing while slots are free. {1, 0}.
-- none     only the releases that follow. {1, 0}.

local op = ARGV[1]
local now = tonumber(ARGV[2])
local token = ARGV[3]
local ttl = tonumber(ARGV[4])

local function release(leases, waiting, lease, message)
  redis.call('ZREM', leases, lease)
  if redis.call('DEL', waiting) == 1 then
    redis.call('PUBLISH', ARGV[6], message)
  end
end

local i = 1
while KEYS[2 * i + 2] do
  release(KEYS[2 * i + 1], KEYS[2 * i + 2], ARGV[2 * i + 6], ARGV[2 * i + 7])
  i = i + 1
end

if op == 'none' then
  return { 1, 0 }
end

if op == 'release' then
  release(KEYS[1], KEYS[2], token, ARGV[7])
  return { 1, 0 }
end

if op == 'renew' then
  if redis.call('ZSCORE', KEYS[1], token) then
    redis.call('ZADD', KEYS[1], now + ttl, token)
    redis.call('PEXPIRE', KEYS[1], ttl * 2)
  end
  return { 1, 0 }
end

local capacity = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if op == 'restore' or held < capacity or redis.call('ZSCORE', KEYS[1], token) then
  redis.call('ZADD', KEYS[1], now + ttl, token)
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return { 1, redis.call('ZCARD', KEYS[1]) }
end
redis.call('SET', KEYS[2], '1', 'PX', ttl * 2)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return { 0, tonumber(first[2]) }
