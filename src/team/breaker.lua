-- One worker's circuit breaker, shared by a team through Redis.
--
-- The same transition rules as rch's pure breaker (src/breaker.rs), applied
-- atomically to its serialized state, so daemons never race a
-- read-modify-write. A property test replays random sequences through both.
--
-- KEYS[1]  the breaker state (JSON, the serde form of the pure breaker)
-- KEYS[2]  probe permits in flight (sorted set: token -> expiry, unix ms)
-- ARGV[1]  operation: get | admit | probe_now | record | record_successes | abandon | tick | reset | seed | report_open
-- ARGV[2]  now (unix ms)
-- ARGV[3]  breaker config (JSON)
-- ARGV[4]  operation arguments (JSON)
-- ARGV[5]  channel to announce a state change on
-- ARGV[6]  message announcing it
-- Returns JSON: {breaker, transition, permit, refusal}.
--
-- record_successes covers several workers in one call: KEYS holds a
-- (breaker, probes) pair per worker, ARGV[4] a list of {permit, count,
-- message}, one per pair, and the reply is the list of their replies. Each
-- is applied as that many 'record's of a success on its own breaker.

local now = tonumber(ARGV[2])
local cfg = cjson.decode(ARGV[3])
local NULL = cjson.null

local function isnull(v)
  return v == nil or v == NULL
end

-- One operation on one worker's breaker; returns the JSON reply.
local function apply(key, probes_key, op, args, message)
  local raw = redis.call('GET', key)
  local b
  if raw then
    b = cjson.decode(raw)
  else
    b = {
      state = 'closed', epoch = 0, consecutive_failures = 0, consecutive_successes = 0,
      since_ms = now, opened_at_ms = NULL, outage_started_ms = NULL,
      probes_in_flight = 0, last_error = NULL, window = {},
    }
  end
  if type(b.window) ~= 'table' then
    b.window = {}
  end
  local changed = (raw == false or raw == nil)
  local epoch_before = b.epoch

  local function sat_sub(a, c)
    if a > c then return a - c end
    return 0
  end

  -- The window counts results per second of the clock: {sec, ok, failed}.
  local now_sec = math.floor(now / 1000)

  local function in_window(sec)
    return sat_sub(now_sec, sec) < cfg.window_secs
  end

  -- A result in the bucket of its second (a clock stepped back: the newest).
  local function count_in(window, at_ms, ok, n)
    n = n or 1
    local sec = math.floor(at_ms / 1000)
    local last = window[#window]
    if last == nil or last[1] < sec then
      last = { sec, 0, 0 }
      table.insert(window, last)
    end
    if ok then last[2] = last[2] + n else last[3] = last[3] + n end
  end

  -- A window saved one entry per result ({at_ms, ok}) becomes buckets.
  local function as_buckets(window)
    local out = {}
    for _, e in ipairs(window) do
      if type(e[2]) == 'boolean' then
        count_in(out, e[1], e[2])
      else
        table.insert(out, e)
      end
    end
    return out
  end
  b.window = as_buckets(b.window)

  local function retry_in()
    if b.state ~= 'open' then return nil end
    local opened = b.opened_at_ms
    if isnull(opened) then opened = b.since_ms end
    return sat_sub(opened + cfg.open_cooldown_secs * 1000, now)
  end

  local function window_counts()
    local total, failures = 0, 0
    for _, e in ipairs(b.window) do
      if in_window(e[1]) then
        total = total + e[2] + e[3]
        failures = failures + e[3]
      end
    end
    return total, failures
  end

  -- Every state change: a new epoch whose probes and success streak start at zero.
  local function change_state(state)
    b.state = state
    b.epoch = b.epoch + 1
    b.since_ms = now
    b.consecutive_successes = 0
    b.probes_in_flight = 0
    redis.call('DEL', probes_key)
    changed = true
  end

  local function enter_open()
    change_state('open')
    b.opened_at_ms = now
    if isnull(b.outage_started_ms) then b.outage_started_ms = now end
    local reason = b.last_error
    if isnull(reason) then reason = '' end
    return { opened = { failures = b.consecutive_failures, reason = reason } }
  end

  local function enter_closed()
    change_state('closed')
    b.consecutive_failures = 0
    b.opened_at_ms = NULL
    b.outage_started_ms = NULL
    b.last_error = NULL
    b.window = {}
  end

  local function tick()
    if b.state == 'open' and retry_in() == 0 then
      change_state('half_open')
      return 'half_opened'
    end
    return NULL
  end

  -- A probe permit whose holder vanished (its TTL passed) is given back.
  local function forget_dead_probes()
    if b.state ~= 'half_open' or b.probes_in_flight == 0 then return end
    redis.call('ZREMRANGEBYSCORE', probes_key, '-inf', now)
    local alive = redis.call('ZCARD', probes_key)
    if alive < b.probes_in_flight then
      b.probes_in_flight = alive
      changed = true
    end
  end

  local function admit()
    if b.state == 'closed' then
      return { epoch = b.epoch, probe = false }, NULL
    end
    if b.state == 'open' then
      return NULL, { state = 'open', retry_in_ms = retry_in(), reason = 'circuit open' }
    end
    forget_dead_probes()
    if b.probes_in_flight < cfg.half_open_max_probes then
      b.probes_in_flight = b.probes_in_flight + 1
      redis.call('ZADD', probes_key, now + args.permit_ttl_ms, args.token)
      changed = true
      return { epoch = b.epoch, probe = true }, NULL
    end
    return NULL, { state = 'half_open', retry_in_ms = NULL, reason = 'half-open probe in flight' }
  end

  local function count_success()
    b.consecutive_failures = 0
    b.consecutive_successes = b.consecutive_successes + 1
  end

  local function count_failure(reason)
    b.consecutive_successes = 0
    b.consecutive_failures = b.consecutive_failures + 1
    b.last_error = reason
  end

  local function should_open()
    if b.consecutive_failures >= cfg.failure_threshold then return true end
    local total, failures = window_counts()
    return total >= cfg.window_min_samples and total > 0
      and failures / total >= cfg.error_rate_threshold
  end

  local function forget_expired()
    local kept = {}
    local dropping = true
    for _, e in ipairs(b.window) do
      if dropping and not in_window(e[1]) then
        -- expired at the front: dropped
      else
        dropping = false
        table.insert(kept, e)
      end
    end
    b.window = kept
  end

  local function record_while_closed(outcome)
    forget_expired()
    changed = true
    if outcome.ok then
      count_success()
      count_in(b.window, now, true)
      return NULL
    end
    count_failure(outcome.reason)
    count_in(b.window, now, false)
    if should_open() then return enter_open() end
    return NULL
  end

  local function record_probe(outcome)
    changed = true
    if outcome.ok then
      count_success()
      if b.consecutive_successes < cfg.success_threshold then return NULL end
      local start = b.outage_started_ms
      if isnull(start) then start = b.since_ms end
      enter_closed()
      return { closed = { recovery_ms = sat_sub(now, start) } }
    end
    count_failure(outcome.reason)
    return enter_open()
  end

  local function record()
    local permit = args.permit
    if permit.epoch ~= b.epoch then return NULL end
    if b.state == 'closed' then return record_while_closed(args.outcome) end
    if b.state == 'half_open' then
      b.probes_in_flight = sat_sub(b.probes_in_flight, 1)
      redis.call('ZREM', probes_key, args.token)
      return record_probe(args.outcome)
    end
    return NULL
  end

  local transition, permit, refusal = NULL, NULL, NULL
  if op == 'get' then
    -- read only
  elseif op == 'tick' then
    transition = tick()
  elseif op == 'admit' then
    transition = tick()
    permit, refusal = admit()
  elseif op == 'probe_now' then
    if b.state == 'open' then
      change_state('half_open')
      transition = 'half_opened'
    end
    permit, refusal = admit()
  elseif op == 'record' then
    transition = record()
  elseif op == 'record_successes' then
    -- Successes of ordinary builds (no probes) of one epoch, counted in one
    -- call: the same as as many 'record's of a success at this time. While
    -- closed a success changes no state; otherwise the epoch moved on.
    if args.permit.epoch == b.epoch and b.state == 'closed' then
      forget_expired()
      changed = true
      b.consecutive_failures = 0
      b.consecutive_successes = b.consecutive_successes + args.count
      count_in(b.window, now, true, args.count)
    end
  elseif op == 'abandon' then
    local p = args.permit
    if p.probe and p.epoch == b.epoch and b.state == 'half_open' then
      b.probes_in_flight = sat_sub(b.probes_in_flight, 1)
      redis.call('ZREM', probes_key, args.token)
      changed = true
    end
  elseif op == 'reset' then
    enter_closed()
    transition = 'reset'
  elseif op == 'seed' then
    -- Redis lost the team's state (restarted empty): this daemon's state
    -- becomes the team's. A state the team already has wins.
    if not raw then
      b = args.breaker
      if type(b.window) ~= 'table' then b.window = {} end
      b.window = as_buckets(b.window)
      epoch_before = -1
    end
  elseif op == 'report_open' then
    -- A daemon that opened this circuit while it could not reach the team:
    -- a closed team breaker opens with its count; otherwise the team's state wins.
    if b.state == 'closed' then
      b.consecutive_failures = args.failures
      b.last_error = args.reason
      transition = enter_open()
    end
  else
    return redis.error_reply('unknown breaker operation ' .. tostring(op))
  end

  local encoded = cjson.encode(b)
  if changed then
    redis.call('SET', key, encoded)
  end
  -- Other daemons only need to hear of state changes (each starts an epoch).
  if b.epoch ~= epoch_before then
    redis.call('PUBLISH', ARGV[5], message)
  end
  return cjson.encode({ breaker = b, transition = transition, permit = permit, refusal = refusal })
end

if ARGV[1] ~= 'record_successes' then
  return apply(KEYS[1], KEYS[2], ARGV[1], cjson.decode(ARGV[4]), ARGV[6])
end
local replies = {}
for i, batch in ipairs(cjson.decode(ARGV[4])) do
  replies[i] = apply(KEYS[2 * i - 1], KEYS[2 * i], 'record_successes', batch, batch.message)
end
return '[' .. table.concat(replies, ',') .. ']'
