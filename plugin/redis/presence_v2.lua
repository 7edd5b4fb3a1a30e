#!lua name=presence_v2
-- SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
--[[
The Redis 7 function library of mosquitto-presence's cluster mode (see plugin/core/cluster.h
for the design). Loaded by every broker with FUNCTION LOAD REPLACE; an incompatible version gets
another library name (presence_v1 was the first), so that brokers of two versions never call
each other's functions.

Every key carries the same hash tag, so every call touches one slot. Every function takes the
same keys, in this order (unused ones are still named):
  1 the user's hash (or the prefix of user hashes, "{presence}:u:", when no user is concerned)
  2 grace zset    3 log stream    4 log bytes    5 trimmed id    6 idle zset    7 floor
  8 user count    9 epoch hash   10 live zset   11 hold         12 seen        13 dead list
 14 generation   15 the user set of a broker epoch (pv2_contrib only; else a dummy)
 16 barrier      17 confirmations hash           18 owner hash
JSON is never parsed here (Lua's cjson changes numbers, "[]" and "/"): the state is an opaque
string rendered by the brokers. Numbers are formatted with %d: seq and times stay exact below
2^53. All times are Redis TIME in milliseconds.

A user hash holds: seq, avail ("0"/"1"), sess, since, state, priv when the user chose a privacy
other than the default (its compact JSON, written by pv2_privacy), pid once a choice was written
(the id of the stream record that carried it, "0-0" for a seed; without pid Redis does not know
the user's choice: it was made before Redis lost its data), and one field per broker
"b:<broker>" = "<epoch>:<count>:<cseq>" (count -1: the epoch was swept, a tombstone; cseq: the
broker's own number of the count, so that a count that arrives late, on a connection the broker
gave up, never undoes a newer one). While its last session has left and it waits to go offline,
also: left (when), bar (its barrier). A user exists only with a document: a count of 0 for a user
Redis does not hold creates nothing.

Going offline is the one change that a count from another broker could wrongly cause: broker b2
counts a new session of alice while b3 counts the end of her other one, and b3's count arrives
first. So a user whose last counted session left is not made offline at once: it waits in the
grace zset (for offline_delay) and for a barrier, a number taken from key 16 and announced on the
stream ({y = barrier}). Every broker confirms a barrier (pv2_sync, key 17: broker -> the highest
barrier confirmed) only once every count it had decided when it learned the barrier has been
answered; the user goes offline (pv2_grace_due) only when every live broker has confirmed its
barrier, so a session counted anywhere before then keeps it available.

Brokers are live while they hold a lease (key 10) under their current epoch (key 9); key 18 holds
which running instance (a random id per process) a broker id belongs to, so that a second broker
started with the same id waits instead of taking the first one's place.

What Redis holds is bounded:
- users: at most max_users (the user count, key 8); a new user beyond it makes the user offline
  the longest (the idle zset, key 6: user -> when its document became offline) forgotten, and
  when every user is online it is refused ("FULL"). Users offline for forget_after are forgotten
  by pv2_forget_due. A forgotten user's hash, idle and grace entries are deleted, the floor (key
  7) rises to its seq (users created later start above it), and a record {u, q, f=1} on the
  stream tells every broker.
- the stream: records are trimmed, oldest first, once their bytes (counted in key 4, the lengths
  of their fields and values) pass the budget; key 5 holds the last trimmed id, so that a reader
  behind it knows it missed records (pv2_read says "GAP") and takes a snapshot instead.
- brokers: one field per broker id in keys 9, 17 and 18.
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
      local _, c = string.match(h[i + 1], '^(%d+):(%-?%d+)')
      c = tonumber(c)
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

-- A stream id "ms-seq" as two numbers.
local function id_parts(id)
  local ms, sq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms or '0'), tonumber(sq or '0')
end

local function id_less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end

-- The bytes a stream entry is counted for: its fields and values, and 16 for the entry.
local function entry_bytes(fields)
  local n = 16
  for i = 1, #fields do
    n = n + #fields[i]
  end
  return n
end

--[[
Appends a record (a flat field/value list) to the stream and trims the oldest records while the
stream's bytes pass budget. The last trimmed id is kept (key 5) for pv2_read's gap check.
Returns the new record's id.
]]
local function append(keys, budget, fields)
  local logkey, byteskey, trimmedkey = keys[3], keys[4], keys[5]
  local id = redis.call('XADD', logkey, '*', unpack(fields))
  local bytes = redis.call('INCRBY', byteskey, entry_bytes(fields))
  while bytes > budget do
    local oldest = redis.call('XRANGE', logkey, '-', '+', 'COUNT', 32)
    if #oldest == 0 then
      redis.call('SET', byteskey, '0')
      return id
    end
    local last
    for _, e in ipairs(oldest) do
      if bytes <= budget then
        break
      end
      bytes = bytes - entry_bytes(e[2])
      last = e[1]
      redis.call('XDEL', logkey, e[1])
    end
    redis.call('SET', byteskey, fmt(math.max(bytes, 0)))
    redis.call('SET', trimmedkey, last)
  end
  return id
end

-- Stores a new document, keeps the idle index, and appends its record to the stream (with the
-- user's privacy choice priv, "" the default, when it is given: see pv2_privacy). Returns the
-- record's id.
local function publish(keys, budget, name, seq, avail, sess, since, state, priv)
  local ukey, idlekey = keys[1], keys[6]
  redis.call('HSET', ukey, 'seq', fmt(seq), 'avail', avail, 'sess', fmt(sess), 'since', since,
             'state', state)
  if avail == '1' then
    redis.call('ZREM', idlekey, name)
  else
    redis.call('ZADD', idlekey, 'NX', fmt(now_ms()), name)
  end
  local fields = {'u', name, 'q', fmt(seq), 'a', avail, 'n', fmt(sess), 't', since, 's', state}
  if priv then
    fields[#fields + 1] = 'p'
    fields[#fields + 1] = priv
  end
  return append(keys, budget, fields)
end

-- Records priv ("" the default: not kept) as the user's privacy choice, carried by the stream
-- record id.
local function keep_privacy(ukey, priv, id)
  if priv == '' then
    redis.call('HDEL', ukey, 'priv')
    redis.call('HSET', ukey, 'pid', id)
  else
    redis.call('HSET', ukey, 'priv', priv, 'pid', id)
  end
end

-- The user's document again, with seq = max(seq + 1, floor + 1, now) and since = now: watchers
-- that gain sight of the user learn nothing of the time they could not see (no seq gap to
-- count, no since from then). priv as for publish. Returns the record's id.
local function jump(keys, budget, name, floor, priv)
  local seq, avail, sess, _, state = doc_of(keys[1])
  local now = now_ms()
  seq = math.max(seq + 1, floor + 1, now)
  return publish(keys, budget, name, seq, avail, sess, fmt(now), state, priv)
end

-- Forgets the user named name (its hash at prefix .. name): deletes it, raises the floor and
-- tells every broker. Returns its seq.
local function forget(keys, prefix, budget, name)
  local ukey = prefix .. name
  local seq = tonumber(redis.call('HGET', ukey, 'seq') or '0')
  redis.call('DEL', ukey)
  redis.call('ZREM', keys[6], name)
  redis.call('ZREM', keys[2], name)
  if tonumber(redis.call('GET', keys[7]) or '0') < seq then
    redis.call('SET', keys[7], fmt(seq))
  end
  if tonumber(redis.call('DECR', keys[8])) < 0 then
    redis.call('SET', keys[8], '0')
  end
  append(keys, budget, {'u', name, 'q', fmt(seq), 'f', '1'})
  return seq
end

--[[
Makes room for a new user (key 1 does not exist yet): below max_users (0: no cap) it is counted;
at the cap the user offline the longest is forgotten first. Returns false when every user is
online (nothing changes then).
]]
local function admit(keys, prefix, budget, max_users)
  local count = tonumber(redis.call('GET', keys[8]) or '0')
  if max_users > 0 and count >= max_users then
    local oldest = redis.call('ZRANGE', keys[6], 0, 0)
    if #oldest == 0 then
      return false
    end
    forget(keys, prefix, budget, oldest[1])
  end
  redis.call('INCR', keys[8])
  return true
end

-- The first seq of a new user: above the broker's floor and the cluster's.
local function new_seq(keys, floor)
  return math.max(floor, tonumber(redis.call('GET', keys[7]) or '0')) + 1
end

-- Whether broker b is registered with epoch e (a string) and holds a lease.
local function broker_live(keys, b, e)
  return redis.call('HGET', keys[9], b) == e and redis.call('ZSCORE', keys[10], b) ~= false
end

--[[
Notes that the cluster's timers ran now and returns whether sweeps, delay expiry and forgetting
may run. Every live broker calls a timer function several times per heartbeat, so a gap longer
than gap_ms between two calls means that Redis itself did not serve anyone (it was paused, slept,
forked or was restarted from its data) or that every broker stalled: leases and deadlines went
stale without anyone being at fault, and a hold of hold_ms then gives every live broker time to
reconnect and heartbeat before anybody is swept. The brokers pass a gap_ms below what a lease
leaves after a heartbeat, so that no stall a live broker's lease could not outlast goes unnoticed.
]]
local function timers_may_run(keys, now, gap_ms, hold_ms)
  local seenkey, holdkey = keys[12], keys[11]
  local seen = tonumber(redis.call('GET', seenkey) or '0')
  redis.call('SET', seenkey, fmt(now))
  local hold = tonumber(redis.call('GET', holdkey) or '0')
  if seen > 0 and now - seen > gap_ms and hold < now + hold_ms then
    hold = now + hold_ms
    redis.call('SET', holdkey, fmt(hold))
  end
  return hold <= now
end

local function reply(status, seq, avail, sess, since, state)
  return {status, fmt(seq), avail, fmt(sess), since, state}
end

-- A broker's field of a user: epoch, count, cseq (numbers), or nil.
local function contribution(v)
  if not v then
    return nil
  end
  local e, c, q = string.match(v, '^(%d+):(%-?%d+):?(%d*)$')
  return tonumber(e), tonumber(c), tonumber(q ~= '' and q or '0')
end

--[[
The last counted session of an available user left: it goes offline after grace_ms and once
every live broker confirmed a new barrier (see the head of this file). Nothing is published
now: subscribers keep the document they have. A user already waiting keeps its barrier.
]]
local function pend(keys, budget, name, now, grace_ms)
  local ukey, gracekey = keys[1], keys[2]
  if redis.call('ZSCORE', gracekey, name) ~= false then
    return
  end
  local bar = redis.call('INCR', keys[16])
  redis.call('ZADD', gracekey, fmt(now + grace_ms), name)
  redis.call('HSET', ukey, 'left', fmt(now), 'bar', fmt(bar))
  append(keys, budget, {'y', fmt(bar)})
end

-- A session is counted again: the user no longer waits to go offline.
local function unpend(keys, name)
  if redis.call('ZREM', keys[2], name) == 1 then
    redis.call('HDEL', keys[1], 'left', 'bar')
  end
end

-- Whether every live broker confirmed barrier bar.
local function confirmed(keys, bar)
  for _, b in ipairs(redis.call('ZRANGE', keys[10], 0, -1)) do
    if tonumber(redis.call('HGET', keys[17], b) or '0') < bar then
      return false
    end
  end
  return true
end

--[[
pv2_contrib: broker B (epoch E) now has n sessions of the user (n = -1: a sweeper writes the
tombstone of a dead epoch). ARGV: prefix, budget, max_users, B, E, n, grace_ms, floor, name,
keep_state (0/1), cseq (the broker's number of this count; 0 for a tombstone). Returns {"STALE"}
when the write comes from an epoch that is not the broker's live one, {"FULL"} when the user is
new and every known user is online, {"NONE"} for a count of 0 or less for a user Redis does not
hold, {"OLD"} for a count older than the one Redis has from that epoch, else {"OK"|"SAME", seq,
avail, sess, since, state}.
]]
local function contrib(keys, args)
  local ukey, setkey = keys[1], keys[15]
  local prefix, budget, max_users = args[1], tonumber(args[2]), tonumber(args[3])
  local b, es, n = args[4], args[5], tonumber(args[6])
  local e = tonumber(es)
  local grace_ms, floor, name, keep = tonumber(args[7]), tonumber(args[8]), args[9], args[10]
  local cseq = tonumber(args[11])
  local field = 'b:' .. b
  if n >= 0 and not broker_live(keys, b, es) then
    return {'STALE'}
  end
  local exists = redis.call('EXISTS', ukey) == 1
  if exists then
    local oe, oc, oq = contribution(redis.call('HGET', ukey, field))
    if oe and (oe > e or (oe == e and oc < 0)) then
      if n < 0 then
        redis.call('SREM', setkey, name)
      end
      return {'STALE'}
    end
    if oe == e and n >= 0 and cseq <= oq then
      return {'OLD'}
    end
  else
    if n <= 0 then
      if n < 0 then
        redis.call('SREM', setkey, name)
      end
      return {'NONE'}
    end
    if not admit(keys, prefix, budget, max_users) then
      return {'FULL'}
    end
  end
  if n < 0 then
    redis.call('HSET', ukey, field, es .. ':-1:0')
  else
    redis.call('HSET', ukey, field, es .. ':' .. fmt(n) .. ':' .. fmt(cseq))
  end
  if n > 0 then
    redis.call('SADD', setkey, name)
  else
    redis.call('SREM', setkey, name)
  end
  local now = now_ms()
  local total = sum_brokers(redis.call('HGETALL', ukey))
  local seq, avail, sess, since, state = doc_of(ukey)
  local navail, nsess, nsince = avail, sess, since
  if not exists then
    seq = new_seq(keys, floor) - 1
    avail = ''
  end
  if total > 0 then
    unpend(keys, name)
    if avail ~= '1' then
      navail, nsince = '1', fmt(now)
    end
    nsess = total
  elseif avail == '1' then
    pend(keys, budget, name, now, grace_ms)
  end
  if navail ~= avail or nsess ~= sess then
    seq = math.max(seq, floor) + 1
    publish(keys, budget, name, seq, navail, nsess, nsince, state)
    return reply('OK', seq, navail, nsess, nsince, state)
  end
  return reply('SAME', seq, avail, sess, since, state)
end

--[[
pv2_cas: a state write through broker B (epoch E): the new state replaces the user's state if
the user's seq is still expected_seq. ARGV: prefix, budget, max_users, B, E, name, expected_seq,
state, floor, keep_state (0/1). Returns {"STALE"}, {"FULL"}, {"OFFLINE"} (without keep_state,
the user went offline before the write arrived: its state went with its last session), or
{"OK"|"SAME"|"CONFLICT", the document values}: CONFLICT carries the current values, to apply the
write to again.
]]
local function cas(keys, args)
  local ukey = keys[1]
  local prefix, budget, max_users = args[1], tonumber(args[2]), tonumber(args[3])
  local b, es, name, expected, nstate, floor =
      args[4], args[5], args[6], args[7], args[8], tonumber(args[9])
  if not broker_live(keys, b, es) then
    return {'STALE'}
  end
  local exists = redis.call('EXISTS', ukey) == 1
  local seq, avail, sess, since, state = doc_of(ukey)
  if exists and avail ~= '1' and args[10] ~= '1' then
    return {'OFFLINE'}
  end
  if fmt(seq) ~= expected then
    return reply('CONFLICT', seq, avail, sess, since, state)
  end
  if nstate == state and exists then
    return reply('SAME', seq, avail, sess, since, state)
  end
  if not exists then
    -- The broker's session is not counted yet: the document it writes says so.
    if not admit(keys, prefix, budget, max_users) then
      return {'FULL'}
    end
    seq = new_seq(keys, floor) - 1
  end
  seq = math.max(seq, floor) + 1
  publish(keys, budget, name, seq, avail, sess, since, nstate)
  return reply('OK', seq, avail, sess, since, nstate)
end

--[[
expire (for pv2_grace_due): ends the wait of a user whose last session left, once its offline
delay is over and every live broker confirmed its barrier. ARGV: prefix, budget, max_users,
name, keep_state.
Returns {"HOLD"}, {"NOTDUE"}, {"WAIT"} (a broker has not confirmed yet), or {"OK"|"SAME",
values}.
]]
local function expire(keys, args)
  local ukey, gracekey, holdkey = keys[1], keys[2], keys[11]
  local budget, name, keep = tonumber(args[2]), args[4], args[5]
  local now = now_ms()
  if tonumber(redis.call('GET', holdkey) or '0') > now then
    return {'HOLD'}
  end
  local score = redis.call('ZSCORE', gracekey, name)
  if score == false or tonumber(score) > now then
    return {'NOTDUE'}
  end
  if redis.call('EXISTS', ukey) == 0 then
    redis.call('ZREM', gracekey, name)
    return {'NOTDUE'}
  end
  local seq, avail, sess, since, state = doc_of(ukey)
  if avail ~= '1' or sum_brokers(redis.call('HGETALL', ukey)) > 0 then
    unpend(keys, name)
    return reply('SAME', seq, avail, sess, since, state)
  end
  if not confirmed(keys, tonumber(redis.call('HGET', ukey, 'bar') or '0')) then
    return {'WAIT'}
  end
  local left = redis.call('HGET', ukey, 'left') or fmt(now)
  unpend(keys, name)
  local nstate = state
  if keep ~= '1' then
    nstate = '{}'
  end
  seq = seq + 1
  publish(keys, budget, name, seq, '0', 0, left, nstate)
  return reply('OK', seq, '0', 0, left, nstate)
end

--[[
pv2_grace_due: ARGV prefix, budget, max_users, limit, gap_ms, hold_ms, keep_state (0/1) (the
arguments of pv2_forget_due, but the last). Takes the users whose delay ended (none during a
hold), at most limit, and makes those whose barrier every live broker confirmed offline (expire,
above). One call for a batch: when many users leave at once (a storm of ends, a broker's
sessions swept), the brokers do not each end the waits of the same users. Returns how many
went offline.
]]
local function grace_due(keys, args)
  local now = now_ms()
  if not timers_may_run(keys, now, tonumber(args[5]), tonumber(args[6])) then
    return 0
  end
  local prefix = args[1]
  local ukeys = {}
  for i, k in ipairs(keys) do
    ukeys[i] = k
  end
  local done = 0
  -- The lowest barrier found unconfirmed: a user waiting for a later one waits too (brokers
  -- confirm barriers in order), without asking every broker again.
  local waiting
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', keys[2], '-inf', fmt(now), 'LIMIT', 0,
                                   tonumber(args[4]))) do
    ukeys[1] = prefix .. name
    local bar = tonumber(redis.call('HGET', ukeys[1], 'bar') or '0')
    if not waiting or bar < waiting then
      local status = expire(ukeys, {prefix, args[2], '', name, args[7]})[1]
      if status == 'OK' then
        done = done + 1
      elseif status == 'WAIT' then
        waiting = bar
      end
    end
  end
  return done
end

--[[
pv2_forget_due: ARGV prefix, budget, max_users, limit, gap_ms, hold_ms, forget_after_ms (0:
never). Forgets at most limit users offline for forget_after, oldest first (none during a hold),
and users beyond max_users (a lowered cap). Returns how many.
]]
local function forget_due(keys, args)
  local prefix, budget, max_users = args[1], tonumber(args[2]), tonumber(args[3])
  local limit, forget_after = tonumber(args[4]), tonumber(args[7])
  local now = now_ms()
  local done = 0
  if not timers_may_run(keys, now, tonumber(args[5]), tonumber(args[6])) then
    return 0
  end
  while done < limit do
    local oldest = redis.call('ZRANGE', keys[6], 0, 0, 'WITHSCORES')
    if #oldest == 0 then
      break
    end
    local count = tonumber(redis.call('GET', keys[8]) or '0')
    local due = forget_after > 0 and tonumber(oldest[2]) + forget_after <= now
    if not due and not (max_users > 0 and count > max_users) then
      break
    end
    forget(keys, prefix, budget, oldest[1])
    done = done + 1
  end
  return done
end

--[[
pv2_register: starts a new epoch of broker B for the running instance I (a random id of the
broker's process): max(old + 1, now), so epochs grow even across a Redis that lost its data. The
old epoch (if any) is queued for sweeping at once. When another instance holds B's lease, nothing
changes and {"CLASH", that instance, ms its lease still runs} is returned: two brokers were given
the same broker_id, and the second must not fence the first (or a restarted broker waits out the
lease of its crashed predecessor). ARGV: B, lease_ms, a new generation id (kept only when the
Redis has none), I. Returns {epoch, generation} or the clash.
]]
local function register(keys, args)
  local epochkey, livekey, deadkey, genkey = keys[9], keys[10], keys[13], keys[14]
  local b, lease, inst = args[1], tonumber(args[2]), args[4]
  local now = now_ms()
  local owner = redis.call('HGET', keys[18], b)
  local until_ms = tonumber(redis.call('ZSCORE', livekey, b) or '0')
  if owner and owner ~= inst and until_ms > now then
    return {'CLASH', owner, fmt(until_ms - now)}
  end
  local old = redis.call('HGET', epochkey, b)
  local e = now
  if old then
    e = math.max(tonumber(old) + 1, now)
    redis.call('RPUSH', deadkey, b .. ':' .. old)
  end
  redis.call('HSET', epochkey, b, fmt(e))
  redis.call('HSET', keys[18], b, inst)
  -- Barriers are confirmed again by the new epoch, after it counted its sessions again.
  redis.call('HSET', keys[17], b, '0')
  redis.call('ZADD', livekey, fmt(now + lease), b)
  redis.call('SET', genkey, args[3], 'NX')
  return {fmt(e), redis.call('GET', genkey)}
end

-- pv2_heartbeat: ARGV B, E, lease_ms, gap_ms, hold_ms. Returns {"STALE"} when the epoch was
-- swept or replaced, else {"OK", generation, live brokers, the latest barrier}.
local function heartbeat(keys, args)
  local livekey, genkey = keys[10], keys[14]
  local b, es, lease = args[1], args[2], tonumber(args[3])
  local now = now_ms()
  timers_may_run(keys, now, tonumber(args[4]), tonumber(args[5]))
  if not broker_live(keys, b, es) then
    return {'STALE'}
  end
  redis.call('ZADD', livekey, 'XX', fmt(now + lease), b)
  return {'OK', redis.call('GET', genkey) or '', redis.call('ZCOUNT', livekey, fmt(now), '+inf'),
          redis.call('GET', keys[16]) or '0'}
end

-- pv2_sync: ARGV B, E, barrier. Broker B confirms that every count it had decided when it
-- learned the barrier was answered. Returns "OK" or "STALE".
local function sync(keys, args)
  local b, es, bar = args[1], args[2], tonumber(args[3])
  if not broker_live(keys, b, es) then
    return 'STALE'
  end
  if tonumber(redis.call('HGET', keys[17], b) or '0') < bar then
    redis.call('HSET', keys[17], b, fmt(bar))
  end
  return 'OK'
end

-- pv2_sweep_claim: ARGV limit, gap_ms, hold_ms, B (the caller, never claimed: it is running).
-- Moves brokers whose lease expired to the dead list (none during a hold). Returns their ids.
local function sweep_claim(keys, args)
  local livekey, deadkey, epochkey = keys[10], keys[13], keys[9]
  local now = now_ms()
  local claimed = {}
  if not timers_may_run(keys, now, tonumber(args[2]), tonumber(args[3])) then
    return claimed
  end
  local due = redis.call('ZRANGEBYSCORE', livekey, '-inf', fmt(now), 'LIMIT', 0,
                         tonumber(args[1]) + 1)
  for _, b in ipairs(due) do
    if b ~= args[4] and #claimed < tonumber(args[1]) then
      redis.call('ZREM', livekey, b)
      redis.call('HDEL', keys[17], b)
      local e = redis.call('HGET', epochkey, b)
      if e then
        redis.call('RPUSH', deadkey, b .. ':' .. e)
      end
      claimed[#claimed + 1] = b
    end
  end
  return claimed
end

-- pv2_deregister: a clean stop. ARGV B, E.
local function deregister(keys, args)
  if redis.call('HGET', keys[9], args[1]) ~= args[2] then
    return 0
  end
  redis.call('ZREM', keys[10], args[1])
  redis.call('HDEL', keys[17], args[1])
  redis.call('RPUSH', keys[13], args[1] .. ':' .. args[2])
  return 1
end

-- pv2_hold: ARGV ms. Suspends sweeps, delay expiry and forgetting until now + ms (never
-- shortens a hold).
local function hold(keys, args)
  local until_ms = now_ms() + tonumber(args[1])
  if tonumber(redis.call('GET', keys[11]) or '0') < until_ms then
    redis.call('SET', keys[11], fmt(until_ms))
  end
  return fmt(until_ms)
end

--[[
pv2_seed: re-seeds a user into a Redis that lost it, from a broker's last document. ARGV: prefix,
budget, max_users, name, seq, avail, sess, since, state, grace_ms, priv (the user's privacy
choice as the broker has it, "" the default; another is kept when Redis does not know the
user's choice: the user is created here, or a count made it again before this seed).
- A user Redis does not hold, offline in the broker's document and at or below the cluster's
  floor, was forgotten (not lost): nothing is created and "FORGOTTEN" tells the broker to forget
  it too.
- Another user Redis does not hold is created with the broker's document (if the cap lets it:
  "FULL" otherwise). An available user waits to go offline (grace_ms, the hold and a barrier)
  unless some broker's count shows a session before.
- A user whose seq is below the broker's lost documents that subscribers have seen (a failover
  to a replica that was behind): the broker's document replaces its document and goes to the
  stream, so that numbering continues above it and every broker has it.
- Nothing happens otherwise. Returns "SEEDED", "SAME", "FORGOTTEN" or "FULL".
]]
local function seed(keys, args)
  local ukey = keys[1]
  local prefix, budget, max_users = args[1], tonumber(args[2]), tonumber(args[3])
  local name, seqs, avail, sess, since, state, grace =
      args[4], args[5], args[6], tonumber(args[7]), args[8], args[9], tonumber(args[10])
  local floor = tonumber(seqs)
  local priv = args[11] or ''
  local now = now_ms()
  if redis.call('EXISTS', ukey) == 1 then
    if redis.call('HEXISTS', ukey, 'pid') == 0 and priv ~= '' then
      keep_privacy(ukey, priv, '0-0')
    end
    if doc_of(ukey) >= floor then
      return 'SAME'
    end
    publish(keys, budget, name, floor, avail, sess, since, state)
  else
    -- (A user the broker shows online was not forgotten: Redis lost it.)
    if avail ~= '1' and floor <= tonumber(redis.call('GET', keys[7]) or '0') then
      return 'FORGOTTEN'
    end
    if not admit(keys, prefix, budget, max_users) then
      return 'FULL'
    end
    redis.call('HSET', ukey, 'seq', seqs, 'avail', avail, 'sess', fmt(sess), 'since', since,
               'state', state)
    if priv ~= '' then
      keep_privacy(ukey, priv, '0-0')
    end
    if avail ~= '1' then
      redis.call('ZADD', keys[6], 'NX', fmt(now), name)
    end
  end
  if avail == '1' and sum_brokers(redis.call('HGETALL', ukey)) == 0 then
    pend(keys, budget, name, now, grace)
  end
  return 'SEEDED'
end

-- pv2_floor: ARGV floor. Raises the cluster's floor to a broker's (after Redis lost its data).
local function floor_raise(keys, args)
  if tonumber(redis.call('GET', keys[7]) or '0') < tonumber(args[1]) then
    redis.call('SET', keys[7], args[1])
  end
  return redis.call('GET', keys[7]) or '0'
end

--[[
pv2_privacy: user name's privacy choice, written through broker B (epoch E). ARGV: prefix,
budget, max_users, B, E, name, priv (its compact JSON; "" the default, everyone), expected (the
choice the broker had when it sent this, "" the default), widens ("1" when, from expected to
priv, some watcher gains sight), floor. The choice is kept in the user's hash (removed with the
user) and carried to every broker by the stream: a record {u, p} (with no document: nobody gains
sight), or, when some watcher may gain sight (widens, or another choice came in between, so
that the broker's reckoning does not hold), a document record with p, seq and since jumped
(jump, above), so that every broker publishes the same bytes. A user Redis does not hold is
created (as pv2_cas does: its session is not counted yet). Returns {"STALE"}, {"FULL"},
{"SAME"} (the choice is already priv) or {"OK"}.
]]
local function privacy(keys, args)
  local ukey = keys[1]
  local prefix, budget, max_users = args[1], tonumber(args[2]), tonumber(args[3])
  local b, es, name, priv, expected, widens, floor =
      args[4], args[5], args[6], args[7], args[8], args[9], tonumber(args[10])
  if not broker_live(keys, b, es) then
    return {'STALE'}
  end
  local old = redis.call('HGET', ukey, 'priv') or ''
  local exists = redis.call('EXISTS', ukey) == 1
  if exists and old == priv then
    return {'SAME'}
  end
  local id
  if not exists then
    if not admit(keys, prefix, budget, max_users) then
      return {'FULL'}
    end
    id = jump(keys, budget, name, new_seq(keys, floor) - 1, priv)
  elseif widens == '1' or old ~= expected then
    id = jump(keys, budget, name, floor, priv)
  else
    id = append(keys, budget, {'u', name, 'p', priv})
  end
  keep_privacy(ukey, priv, id)
  return {'OK'}
end

--[[
pv2_widen: user name is shown to more watchers than before (a broker re-read its groups file):
its document is published again with seq and since jumped (jump, above). ARGV: budget, B, E,
name, floor. Every broker that re-reads the same file asks for the users it widens: each call is one
jump, and a jump is harmless (the document says the same, seq moves forward). Returns {"STALE"},
{"NONE"} (Redis does not hold the user) or {"OK"}.
]]
local function widen(keys, args)
  if not broker_live(keys, args[2], args[3]) then
    return {'STALE'}
  end
  if redis.call('EXISTS', keys[1]) == 0 then
    return {'NONE'}
  end
  jump(keys, tonumber(args[1]), args[4], tonumber(args[5]))
  return {'OK'}
end

--[[
pv2_read: ARGV last_id, count. The stream's entries after last_id (at most count), or {"GAP"}
when records after last_id were trimmed: the reader missed some and takes a snapshot.
]]
local function read(keys, args)
  local trimmed = redis.call('GET', keys[5])
  if trimmed and id_less(args[1], trimmed) then
    return {'GAP'}
  end
  return {'ENTRIES', redis.call('XRANGE', keys[3], '(' .. args[1], '+', 'COUNT',
                                tonumber(args[2]))}
end

redis.register_function('pv2_contrib', contrib)
redis.register_function('pv2_cas', cas)
redis.register_function('pv2_grace_due', grace_due)
redis.register_function('pv2_forget_due', forget_due)
redis.register_function('pv2_register', register)
redis.register_function('pv2_heartbeat', heartbeat)
redis.register_function('pv2_sync', sync)
redis.register_function('pv2_sweep_claim', sweep_claim)
redis.register_function('pv2_deregister', deregister)
redis.register_function('pv2_hold', hold)
redis.register_function('pv2_seed', seed)
redis.register_function('pv2_floor', floor_raise)
redis.register_function('pv2_read', read)
redis.register_function('pv2_privacy', privacy)
redis.register_function('pv2_widen', widen)
