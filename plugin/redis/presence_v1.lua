#!lua name=presence_v1
-- SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
--[[
The Redis 7 function library of mosquitto-presence's cluster mode (see plugin/core/cluster.h
for the design). Loaded by every broker with FUNCTION LOAD REPLACE; a later, incompatible
version gets another library name (presence_v2), so that brokers of two versions can share one
Redis during a rolling upgrade.

Every key is named by the caller (KEYS) and carries the same hash tag, so every call touches
one slot. JSON is never parsed here (Lua's cjson changes numbers, "[]" and "/"): the state is
an opaque string rendered by the brokers. Numbers are formatted with %d: seq and times stay
exact below 2^53. All times are Redis TIME in milliseconds.

A user hash holds: seq, avail ("0"/"1"), sess, since, left, state, and one field per broker
"b:<broker>" = "<epoch>:<count>" (count -1: the epoch was swept, a tombstone).
]]

local function fmt(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The sum of the live counts of every broker in the flat HGETALL reply h.
local function sum_brokers(h)
  local total = 0
  for i = 1, #h, 2 do
    if string.sub(h[i], 1, 2) == 'b:' then
      local c = tonumber(string.match(h[i + 1], ':(%-?%d+)$'))
      if c and c > 0 then
        total = total + c
      end
    end
  end
  return total
end

-- The user's document values: seq (number), avail, sess (number), since, state.
local function doc_of(ukey)
  local r = redis.call('HMGET', ukey, 'seq', 'avail', 'sess', 'since', 'state')
  return tonumber(r[1] or '0'), r[2] or '0', tonumber(r[3] or '0'), r[4] or '0', r[5] or '{}'
end

-- Stores a new document and appends its record to the stream.
local function publish(ukey, logkey, maxlen, name, seq, avail, sess, since, state)
  redis.call('HSET', ukey, 'seq', fmt(seq), 'avail', avail, 'sess', fmt(sess), 'since', since,
             'state', state)
  redis.call('XADD', logkey, 'MAXLEN', '~', maxlen, '*', 'u', name, 'q', fmt(seq), 'a', avail,
             'n', fmt(sess), 't', since, 's', state)
end

-- Whether broker b is registered with epoch e (a string) and holds a lease.
local function broker_live(epochkey, livekey, b, e)
  return redis.call('HGET', epochkey, b) == e and redis.call('ZSCORE', livekey, b) ~= false
end

--[[
Notes that the cluster's timers ran now (KEYS seenkey, holdkey) and returns whether sweeps and
delay expiry may run. When no broker got a timer call through for longer than gap_ms (Redis
was paused, slept or restarted from its data, or every broker was stalled), leases and delay
deadlines went stale without anyone being at fault: a hold of 2 x gap_ms then gives every live
broker time to heartbeat again before anybody is swept. This catches what a broker's own
reconnection hold cannot: commands that waited in sockets while Redis slept run as soon as it
wakes, possibly a sweep before any heartbeat.
]]
local function timers_may_run(seenkey, holdkey, now, gap_ms)
  local seen = tonumber(redis.call('GET', seenkey) or '0')
  redis.call('SET', seenkey, fmt(now))
  local hold = tonumber(redis.call('GET', holdkey) or '0')
  if seen > 0 and now - seen > gap_ms and hold < now + 2 * gap_ms then
    hold = now + 2 * gap_ms
    redis.call('SET', holdkey, fmt(hold))
  end
  return hold <= now
end

local function reply(status, seq, avail, sess, since, state)
  return {status, fmt(seq), avail, fmt(sess), since, state}
end

--[[
pv1_contrib: broker B (epoch E) now has n sessions of the user (n = -1: a sweeper writes the
tombstone of a dead epoch). KEYS: user, the epoch's user set, grace zset, log stream, epoch
hash, live zset. ARGV: B, E, n, grace_ms, floor, name, keep_state (0/1), maxlen.
Returns {"STALE"} when the write comes from an epoch that is not the broker's live one, else
{"OK"|"SAME", seq, avail, sess, since, state}.
]]
local function contrib(keys, args)
  local ukey, setkey, gracekey, logkey, epochkey, livekey =
      keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
  local b, es, n = args[1], args[2], tonumber(args[3])
  local e = tonumber(es)
  local grace_ms, floor, name, keep, maxlen =
      tonumber(args[4]), tonumber(args[5]), args[6], args[7], args[8]
  local field = 'b:' .. b
  if n >= 0 and not broker_live(epochkey, livekey, b, es) then
    return {'STALE'}
  end
  local old = redis.call('HGET', ukey, field)
  if old then
    local oe, oc = string.match(old, '^(%d+):(%-?%d+)$')
    oe, oc = tonumber(oe), tonumber(oc)
    if oe > e or (oe == e and oc < 0) then
      if n < 0 then
        redis.call('SREM', setkey, name)
      end
      return {'STALE'}
    end
  end
  if n < 0 then
    redis.call('HSET', ukey, field, es .. ':-1')
  else
    redis.call('HSET', ukey, field, es .. ':' .. fmt(n))
  end
  if n > 0 then
    redis.call('SADD', setkey, name)
  else
    redis.call('SREM', setkey, name)
  end
  local now = now_ms()
  local total = sum_brokers(redis.call('HGETALL', ukey))
  local seq, avail, sess, since, state = doc_of(ukey)
  local navail, nsess, nsince, nstate = avail, sess, since, state
  if total > 0 then
    redis.call('ZREM', gracekey, name)
    if avail ~= '1' then
      navail, nsince = '1', fmt(now)
    end
    nsess = total
  elseif avail == '1' then
    if grace_ms > 0 then
      -- Waiting out the offline delay: subscribers keep the document they have.
      if redis.call('ZSCORE', gracekey, name) == false then
        redis.call('ZADD', gracekey, now + grace_ms, name)
        redis.call('HSET', ukey, 'left', fmt(now))
      end
    else
      navail, nsess, nsince = '0', 0, fmt(now)
      if keep ~= '1' then
        nstate = '{}'
      end
    end
  end
  if navail ~= avail or nsess ~= sess or nstate ~= state then
    seq = math.max(seq, floor) + 1
    publish(ukey, logkey, maxlen, name, seq, navail, nsess, nsince, nstate)
    return reply('OK', seq, navail, nsess, nsince, nstate)
  end
  return reply('SAME', seq, avail, sess, since, state)
end

--[[
pv1_cas: a state write through broker B (epoch E): the new state replaces the user's state if
the user's seq is still expected_seq. KEYS: user, log stream, epoch hash, live zset. ARGV: B, E,
name, expected_seq, state, floor, maxlen. Returns {"STALE"}, or {"OK"|"SAME"|"CONFLICT", the
document values}: CONFLICT carries the current values, to apply the write to again.
]]
local function cas(keys, args)
  local ukey, logkey, epochkey, livekey = keys[1], keys[2], keys[3], keys[4]
  local b, es, name, expected, nstate, floor, maxlen =
      args[1], args[2], args[3], args[4], args[5], tonumber(args[6]), args[7]
  if not broker_live(epochkey, livekey, b, es) then
    return {'STALE'}
  end
  local seq, avail, sess, since, state = doc_of(ukey)
  if fmt(seq) ~= expected then
    return reply('CONFLICT', seq, avail, sess, since, state)
  end
  if nstate == state then
    return reply('SAME', seq, avail, sess, since, state)
  end
  seq = math.max(seq, floor) + 1
  publish(ukey, logkey, maxlen, name, seq, avail, sess, since, nstate)
  return reply('OK', seq, avail, sess, since, nstate)
end

--[[
pv1_expire: ends the offline delay of a user whose grace deadline has passed. KEYS: user, grace
zset, log stream, hold. ARGV: name, keep_state, maxlen. Returns {"HOLD"}, {"NOTDUE"}, or
{"OK"|"SAME", values}.
]]
local function expire(keys, args)
  local ukey, gracekey, logkey, holdkey = keys[1], keys[2], keys[3], keys[4]
  local name, keep, maxlen = args[1], args[2], args[3]
  local now = now_ms()
  if tonumber(redis.call('GET', holdkey) or '0') > now then
    return {'HOLD'}
  end
  local score = redis.call('ZSCORE', gracekey, name)
  if score == false or tonumber(score) > now then
    return {'NOTDUE'}
  end
  redis.call('ZREM', gracekey, name)
  local seq, avail, sess, since, state = doc_of(ukey)
  if avail ~= '1' or sum_brokers(redis.call('HGETALL', ukey)) > 0 then
    return reply('SAME', seq, avail, sess, since, state)
  end
  local left = redis.call('HGET', ukey, 'left') or fmt(now)
  local nstate = state
  if keep ~= '1' then
    nstate = '{}'
  end
  seq = seq + 1
  publish(ukey, logkey, maxlen, name, seq, '0', 0, left, nstate)
  return reply('OK', seq, '0', 0, left, nstate)
end

-- pv1_grace_due: KEYS grace zset, hold, seen. ARGV limit, lease_ms. The users whose delay
-- ended (none during a hold).
local function grace_due(keys, args)
  local now = now_ms()
  if not timers_may_run(keys[3], keys[2], now, tonumber(args[2])) then
    return {}
  end
  return redis.call('ZRANGEBYSCORE', keys[1], '-inf', fmt(now), 'LIMIT', 0, tonumber(args[1]))
end

--[[
pv1_register: starts a new epoch of broker B: max(old + 1, now), so epochs grow even across a
Redis that lost its data. The old epoch (if any) is queued for sweeping at once. KEYS: epoch
hash, live zset, dead list, generation. ARGV: B, lease_ms, a new generation id (kept only when
the Redis has none). Returns {epoch, generation}.
]]
local function register(keys, args)
  local epochkey, livekey, deadkey, genkey = keys[1], keys[2], keys[3], keys[4]
  local b, lease = args[1], tonumber(args[2])
  local now = now_ms()
  local old = redis.call('HGET', epochkey, b)
  local e = now
  if old then
    e = math.max(tonumber(old) + 1, now)
    redis.call('RPUSH', deadkey, b .. ':' .. old)
  end
  redis.call('HSET', epochkey, b, fmt(e))
  redis.call('ZADD', livekey, fmt(now + lease), b)
  redis.call('SET', genkey, args[3], 'NX')
  return {fmt(e), redis.call('GET', genkey)}
end

-- pv1_heartbeat: KEYS epoch hash, live zset, generation, seen, hold. ARGV B, E, lease_ms.
-- Returns {"STALE"} when the epoch was swept or replaced, else {"OK", generation, live
-- brokers}.
local function heartbeat(keys, args)
  local epochkey, livekey, genkey = keys[1], keys[2], keys[3]
  local b, es, lease = args[1], args[2], tonumber(args[3])
  local now = now_ms()
  timers_may_run(keys[4], keys[5], now, lease)
  if not broker_live(epochkey, livekey, b, es) then
    return {'STALE'}
  end
  redis.call('ZADD', livekey, 'XX', fmt(now + lease), b)
  return {'OK', redis.call('GET', genkey) or '', redis.call('ZCOUNT', livekey, fmt(now), '+inf')}
end

-- pv1_sweep_claim: KEYS live zset, dead list, epoch hash, hold, seen. ARGV limit, lease_ms.
-- Moves brokers whose lease expired to the dead list (none during a hold). Returns how many.
local function sweep_claim(keys, args)
  local livekey, deadkey, epochkey, holdkey = keys[1], keys[2], keys[3], keys[4]
  local now = now_ms()
  if not timers_may_run(keys[5], holdkey, now, tonumber(args[2])) then
    return 0
  end
  local due = redis.call('ZRANGEBYSCORE', livekey, '-inf', fmt(now), 'LIMIT', 0,
                         tonumber(args[1]))
  for _, b in ipairs(due) do
    redis.call('ZREM', livekey, b)
    local e = redis.call('HGET', epochkey, b)
    if e then
      redis.call('RPUSH', deadkey, b .. ':' .. e)
    end
  end
  return #due
end

-- pv1_deregister: a clean stop. KEYS live zset, dead list, epoch hash. ARGV B, E.
local function deregister(keys, args)
  if redis.call('HGET', keys[3], args[1]) ~= args[2] then
    return 0
  end
  redis.call('ZREM', keys[1], args[1])
  redis.call('RPUSH', keys[2], args[1] .. ':' .. args[2])
  return 1
end

-- pv1_hold: KEYS hold. ARGV ms. Suspends sweeps and delay expiry until now + ms (never
-- shortens a hold).
local function hold(keys, args)
  local until_ms = now_ms() + tonumber(args[1])
  if tonumber(redis.call('GET', keys[1]) or '0') < until_ms then
    redis.call('SET', keys[1], fmt(until_ms))
  end
  return fmt(until_ms)
end

--[[
pv1_seed: re-seeds a user into a Redis that lost it, from a broker's last document. KEYS: user,
grace zset, log stream. ARGV: name, seq, avail, sess, since, state, grace_ms, maxlen.
- A user that does not exist is created with the broker's document. An available user is
  queued to go offline after grace_ms (after the hold) unless some broker's contribution shows
  a session before.
- A user whose seq is below the broker's lost documents that subscribers have seen (a failover
  to a replica that was behind): the broker's document replaces its document and goes to the
  stream, so that numbering continues above it and every broker has it; an available document
  with no session counted is queued to go offline the same way.
- Nothing happens otherwise (the user is at the broker's seq or beyond). Returns 1 when the
  user was seeded, 0 otherwise.
]]
local function seed(keys, args)
  local ukey, gracekey, logkey = keys[1], keys[2], keys[3]
  local now = now_ms()
  local floor = tonumber(args[2])
  if redis.call('EXISTS', ukey) == 1 then
    if doc_of(ukey) >= floor then
      return 0
    end
    publish(ukey, logkey, args[8], args[1], floor, args[3], tonumber(args[4]), args[5], args[6])
  else
    redis.call('HSET', ukey, 'seq', args[2], 'avail', args[3], 'sess', args[4], 'since',
               args[5], 'state', args[6])
  end
  if args[3] == '1' and sum_brokers(redis.call('HGETALL', ukey)) == 0 then
    redis.call('HSET', ukey, 'left', fmt(now))
    redis.call('ZADD', gracekey, fmt(now + tonumber(args[7])), args[1])
  end
  return 1
end

redis.register_function('pv1_contrib', contrib)
redis.register_function('pv1_cas', cas)
redis.register_function('pv1_expire', expire)
redis.register_function('pv1_grace_due', grace_due)
redis.register_function('pv1_register', register)
redis.register_function('pv1_heartbeat', heartbeat)
redis.register_function('pv1_sweep_claim', sweep_claim)
redis.register_function('pv1_deregister', deregister)
redis.register_function('pv1_hold', hold)
redis.register_function('pv1_seed', seed)
