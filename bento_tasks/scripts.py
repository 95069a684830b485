"""Every Lua script the buffer runs, in one place.

Each script keeps one step of a batch's life atomic, so two flushes, a crashed
worker, a duplicated Celery message or a retry racing a lease recovery can never
take, send or lose the same event twice. Times come from Redis ``TIME`` so workers
with skewed clocks agree. Keys all carry the same ``{prefix}`` hash tag: the scripts
also run on Redis Cluster.

A batch keeps its id for life. Where it stands:

- dispatched (in the ``inflight`` zset, scored by its lease deadline): a ``post_batch``
  message for it exists, or a flush will re-send one when the lease runs out;
- owned: BEGIN also wrote an attempt's token into ``meta:<id>`` field ``owner``; every
  later step (ACK, RETRY, SPLIT, BURY, REJECT) acts only for that token, so a duplicated,
  redelivered or late message, or an attempt whose lease was recovered, changes nothing;
- deferred (in the ``deferred`` zset, scored by the time it may go): waiting out a backoff,
  a pause or the rate limit; the flush dispatches it again when it is due.

``meta:<id>`` also holds the attempt record (``policy.Record``): attempts, deaths,
unanswered attempts, last status and detail, first failure.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# The fencing check of every step after BEGIN. Convention: KEYS[1] in-flight zset, KEYS[2] batch list,
# KEYS[3] meta hash; ARGV[1] batch id, ARGV[2] the attempt's token ('' for a batch no attempt owns),
# ARGV[3] '1' when a flush acts on an expired lease (then the lease must still be expired), else '0'.
_OWNED = (
    _NOW
    + """
local function owned()
  local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not lease then return false end
  if (redis.call('HGET', KEYS[3], 'owner') or '') ~= ARGV[2] then return false end
  return ARGV[3] ~= '1' or tonumber(lease) <= now
end
local function write_record(key, json)
  for field, value in pairs(cjson.decode(json)) do redis.call('HSET', key, field, value) end
end
local function count(key, json)
  for field, value in pairs(cjson.decode(json)) do redis.call('HINCRBY', key, field, value) end
end
"""
)

# ENQUEUE_ONCE: queue the event of a send_event message unless that message was queued before. A broker
# delivers a message again when its worker died before acknowledging it (kombu restores it after the
# visibility_timeout, reject_on_worker_lost requeues it at once); its task must not queue the event twice.
# Message ids are remembered in sets of one period each; a message is looked up in this period's and the
# previous one's, so it is remembered for at least one period.
# KEYS[1] queue list, KEYS[2] this period's set of message ids, KEYS[3] the previous period's set
# ARGV[1] the message's id (a digest), ARGV[2] seconds this period's set lives after its last write (two
# periods), ARGV[3] the event as encoded
# Returns 1 if the event was queued, 0 if this message had been queued before.
ENQUEUE_ONCE = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[1], ARGV[3])
return 1
"""

# CLAIM: move up to ARGV[1] events from the queue into a new batch and lease it.
# KEYS[1] queue list, KEYS[2] in-flight zset (batch id -> lease deadline), KEYS[3] new batch list,
# KEYS[4] new batch's meta hash (its `created` time: evidence of health is measured from it)
# ARGV[1] max events, ARGV[2] max bytes (the first event is taken even if larger, so the post task
#         can dead-letter it), ARGV[3] lease seconds, ARGV[4] new batch id,
# ARGV[5] '1' to claim only a full batch (full by count or by bytes), else '0'
# Returns how many events were claimed (0: the queue is empty, or too short for a full batch).
# Only the count comes back: the post task reads the events, so they cross to Python once.
CLAIM = (
    _NOW
    + """
local max_events, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, size, full = 0, 0, false
while true do
  if n == max_events then full = true break end
  local item = redis.call('LMOVE', KEYS[1], KEYS[3], 'LEFT', 'RIGHT')
  if not item then break end
  size = size + #item
  if n > 0 and size > max_bytes then
    redis.call('LMOVE', KEYS[3], KEYS[1], 'RIGHT', 'LEFT')
    full = true
    break
  end
  n = n + 1
end
if n > 0 and not full and ARGV[5] == '1' then
  for i = 1, n do redis.call('LMOVE', KEYS[3], KEYS[1], 'RIGHT', 'LEFT') end
  return 0
end
if n > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
  redis.call('HSET', KEYS[4], 'created', string.format('%.6f', now))
end
return n
"""
)

# BEGIN: an attempt takes a dispatched batch: nobody else may own it; honour a pause; while Bento answers
# no one, be the only attempt posting (the probe); take a rate-limit slot (GCRA with no burst: one POST
# every ARGV[4] seconds across all workers); extend the lease. A held batch (field `held` '1') is only
# looked at, never posted (policy.decide_held): it takes the batch and nothing else.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] meta hash, KEYS[4] deferred zset,
# KEYS[5] limiter key (theoretical arrival time), KEYS[6] paused-until key, KEYS[7] stats hash (field
# `silent`: attempts unanswered since Bento last accepted a batch), KEYS[8] probe key (the probing token)
# ARGV[1] batch id, ARGV[2] the attempt's token, ARGV[3] lease seconds, ARGV[4] seconds between POSTs
# (0: no limit), ARGV[5] longest wait the caller will sleep, ARGV[6] longest wait held as a countdown,
# ARGV[7] unanswered attempts in a row from which only one attempt at a time may post
# Returns {-1} if the batch is not dispatched (delivered, deferred, cut into pieces): do nothing;
# {-2, lease seconds left} if another attempt owns it: do nothing;
# {0, wait} to be re-dispatched with that countdown (the lease now covers it);
# {2, wait} when it was moved to the deferred set for that long (a pause, a probe running, a far
# rate-limit slot);
# {1, wait, events, record} when the token owns it: sleep `wait` seconds and POST.
BEGIN = (
    _NOW
    + """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not lease then return {-1} end
if redis.call('HEXISTS', KEYS[3], 'owner') == 1 then return {-2, tostring(tonumber(lease) - now)} end
local wait, reserve = 0, false
local paused = tonumber(redis.call('GET', KEYS[6]) or '0')
local probing = tonumber(redis.call('HGET', KEYS[7], 'silent') or '0') >= tonumber(ARGV[7])
local probe_left = probing and redis.call('PTTL', KEYS[8]) or -2
if redis.call('HGET', KEYS[3], 'held') == '1' then
  reserve = true
elseif paused > now then
  wait = paused - now
elseif probe_left > 0 then
  wait = probe_left / 1000
else
  local interval = tonumber(ARGV[4])
  if interval > 0 then
    local tat = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), now)
    wait = tat - now
    if wait <= tonumber(ARGV[5]) then
      local ttl = math.ceil((tat + interval - now) * 1000) + 1000
      redis.call('SET', KEYS[5], tostring(tat + interval), 'PX', ttl)
      reserve = true
    end
  else
    reserve = true
  end
  if reserve and probing then
    redis.call('SET', KEYS[8], ARGV[2], 'PX', math.ceil((wait + tonumber(ARGV[3])) * 1000))
  end
end
if reserve then
  redis.call('HSET', KEYS[3], 'owner', ARGV[2])
  redis.call('ZADD', KEYS[1], now + wait + tonumber(ARGV[3]), ARGV[1])
  return {1, tostring(wait), redis.call('LRANGE', KEYS[2], 0, -1), redis.call('HGETALL', KEYS[3])}
end
if wait <= tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[1], now + wait + tonumber(ARGV[3]), ARGV[1])
  return {0, tostring(wait)}
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], now + wait, ARGV[1])
return {2, tostring(wait)}
"""
)

# ACK: Bento accepted the batch: forget it and count it, if the caller's attempt still owns it. It also ends
# the runs of identical refusals and of unanswered attempts, and with them any probe.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] meta hash, KEYS[4] stats hash,
# KEYS[5] failure reports list, KEYS[6] refusals hash, KEYS[7] probe key
# ARGV[1] batch id, ARGV[2] token, ARGV[3] '0', ARGV[4] events Bento recorded, ARGV[5] events Bento
# reported failed, ARGV[6] report (JSON) kept, newest first, when ARGV[5] > 0: Bento does not say which
# Returns 1 if acknowledged, 0 if the attempt no longer owned the batch (nothing counted).
ACK = (
    _OWNED
    + """
if not owned() then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[6], KEYS[7])
redis.call('HDEL', KEYS[4], 'silent')
redis.call('HINCRBY', KEYS[4], 'delivered', ARGV[4])
redis.call('HINCRBY', KEYS[4], 'failed', ARGV[5])
redis.call('HINCRBY', KEYS[4], 'batches', 1)
redis.call('HSET', KEYS[4], 'accepted_at', string.format('%.6f', now))
if tonumber(ARGV[5]) > 0 then
  redis.call('LPUSH', KEYS[5], ARGV[6])
  redis.call('LTRIM', KEYS[5], 0, 999)
end
return 1
"""
)

# RETRY: the attempt ends without delivering; the batch goes again after a wait, dispatched at once with
# a countdown when the wait is short, else deferred for the flush to dispatch when due. Also the flush's
# re-dispatch of an expired lease (ARGV[3] '1'), with the dead attempt's token or '' for a lost message.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] meta hash, KEYS[4] deferred zset,
# KEYS[5] paused-until key, KEYS[6] stats hash
# ARGV[1] batch id, ARGV[2] token, ARGV[3] recovering, ARGV[4] wait seconds, ARGV[5] seconds to pause every
# worker (0: none; an existing longer pause is kept), ARGV[6] longest wait held as a countdown,
# ARGV[7] lease seconds, ARGV[8] record fields to store (JSON object of strings),
# ARGV[9] counters to add to the stats hash (JSON object)
# Returns {0} if the attempt no longer owned the batch, else {1, dispatch now (1) or deferred (0),
# wait seconds, 1 if this call started a pause (none was running), pause seconds left}.
RETRY = (
    _OWNED
    + """
if not owned() then return {0} end
redis.call('HDEL', KEYS[3], 'owner')
write_record(KEYS[3], ARGV[8])
count(KEYS[6], ARGV[9])
local wait, started, left = tonumber(ARGV[4]), 0, 0
if tonumber(ARGV[5]) > 0 then
  local current = tonumber(redis.call('GET', KEYS[5]) or '0')
  local wanted = now + tonumber(ARGV[5])
  if current <= now then started = 1 end
  if wanted > current then
    redis.call('SET', KEYS[5], tostring(wanted), 'PXAT', math.ceil(wanted * 1000))
    current = wanted
  end
  left = current - now
  wait = math.max(wait, left)
end
if wait <= tonumber(ARGV[6]) then
  redis.call('ZADD', KEYS[1], now + wait + tonumber(ARGV[7]), ARGV[1])
  return {1, 1, tostring(wait), started, tostring(left)}
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], now + wait, ARGV[1])
return {1, 0, tostring(wait), started, tostring(left)}
"""
)

# SPLIT: cut a batch into pieces of ARGV[4] events, dispatched at once; each piece inherits the record.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] meta hash, KEYS[4] stats hash, then for piece i:
# KEYS[3 + 2i] its batch list, KEYS[4 + 2i] its meta hash
# ARGV[1] batch id, ARGV[2] token, ARGV[3] recovering, ARGV[4] events per piece, ARGV[5] lease seconds,
# ARGV[6] inherited record fields (JSON object of strings), ARGV[7] counters to add to the stats hash,
# ARGV[8..] piece ids (at least as many as pieces)
# Returns the number of pieces (0: the attempt no longer owned the batch).
SPLIT = (
    _OWNED
    + """
if not owned() then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local per = tonumber(ARGV[4])
local pieces = math.ceil(#items / per)
local deadline = now + tonumber(ARGV[5])
for p = 1, pieces do
  local first = (p - 1) * per + 1
  redis.call('RPUSH', KEYS[3 + 2 * p], unpack(items, first, math.min(first + per - 1, #items)))
  write_record(KEYS[4 + 2 * p], ARGV[6])
  redis.call('HSET', KEYS[4 + 2 * p], 'created', string.format('%.6f', now))
  redis.call('ZADD', KEYS[1], deadline, ARGV[7 + p])
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
count(KEYS[4], ARGV[7])
return pieces
"""
)

# BURY: move every event of a batch to the dead letters.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] meta hash, KEYS[4] dead-letter list,
# KEYS[5] refusals hash (field `answer`: the answer of the current run of refused single events, `count`)
# KEYS[6] stats hash
# ARGV[1] batch id, ARGV[2] token, ARGV[3] recovering, ARGV[4] dead-letter header (JSON: reason, status,
# attempts, time), ARGV[5] Bento's answer when a single event was refused ('' otherwise),
# ARGV[6] counters to add to the stats hash (JSON object)
# Each dead letter is the header, a newline, then the event exactly as queued.
# Returns the number of events buried (0: the attempt no longer owned the batch).
BURY = (
    _OWNED
    + """
if not owned() then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i, item in ipairs(items) do
  redis.call('RPUSH', KEYS[4], ARGV[4] .. '\\n' .. item)
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
if ARGV[5] ~= '' then
  if redis.call('HGET', KEYS[5], 'answer') == ARGV[5] then
    redis.call('HINCRBY', KEYS[5], 'count', 1)
  else
    redis.call('HSET', KEYS[5], 'answer', ARGV[5], 'count', 1)
  end
end
count(KEYS[6], ARGV[6])
return #items
"""
)

# END_PROBE: an attempt that probed Bento (see BEGIN) is over without an acceptance: the next may probe.
# KEYS[1] probe key
# ARGV[1] the attempt's token
# Returns 1 if this attempt was the probe, else 0.
END_PROBE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# REJECT: take events the post task found invalid out of its batch into the dead letters.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] meta hash, KEYS[4] dead-letter list
# ARGV[1] batch id, ARGV[2] token, ARGV[3] '0', then pairs: ARGV[2k+2] the event as queued,
# ARGV[2k+3] its dead-letter header
# Returns the number of events left in the batch (0: it is gone), -1 if the attempt no longer owned it.
REJECT = (
    _OWNED
    + """
if not owned() then return -1 end
for i = 4, #ARGV, 2 do
  if redis.call('LREM', KEYS[2], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[4], ARGV[i + 1] .. '\\n' .. ARGV[i])
  end
end
local left = redis.call('LLEN', KEYS[2])
if left == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[3])
end
return left
"""
)

# RELEASE: the flush dispatches deferred batches due before its next tick, each with the countdown
# left until it is due.
# KEYS[1] deferred zset, KEYS[2] in-flight zset
# ARGV[1] seconds ahead (the longest countdown), ARGV[2] lease seconds, ARGV[3] most batches to release
# Returns {batch id, countdown seconds, ...}.
RELEASE = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + tonumber(ARGV[1]), 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #due, 2 do
  local wait = math.max(0, tonumber(due[i + 1]) - now)
  redis.call('ZREM', KEYS[1], due[i])
  redis.call('ZADD', KEYS[2], now + wait + tonumber(ARGV[2]), due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = tostring(wait)
end
return out
"""
)

# RESUME: an operator ends a pause: every deferred batch is due now (the next flush dispatches them).
# The run of identical refusals is kept: if its cause is fixed the next accepted batch ends it, if not,
# delivery pauses again at once instead of dead-lettering more events first.
# KEYS[1] paused-until key, KEYS[2] deferred zset
# Returns {1 if a pause was running, else 0, number of deferred batches}.
RESUME = (
    _NOW
    + """
local paused = tonumber(redis.call('GET', KEYS[1]) or '0') > now and 1 or 0
redis.call('DEL', KEYS[1])
local waiting = redis.call('ZCARD', KEYS[2])
if waiting > 0 then redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[2], 'WEIGHTS', 0) end
return {paused, waiting}
"""
)

# REPLAY: take up to ARGV[1] dead letters from the head of the list: put those matching a filter back on the
# queue and rotate the others to the tail, in their order. Called in windows until every letter that was there
# at the start has been examined once: linear in the list, and Redis is never blocked for long (a window of a
# few thousand letters takes milliseconds; at most about 8,000, Lua's unpack() limit). Letters dead-lettered
# meanwhile are appended behind the rotated ones, so they are not examined.
# KEYS[1] dead-letter list, KEYS[2] queue list
# ARGV[1] letters to examine, ARGV[2] text the reason must contain ('' any), ARGV[3] status: '' any, 'none' no
# status, else a code, ARGV[4] text the event's email must contain, lower-case ASCII ('' any)
# The rules are those of buffer.DeadLetterFilter. A letter whose header or event does not parse never matches a
# filter on it (it stays). A header without '"status": N' cannot have status N (a quote inside a JSON string
# is escaped), so most letters are ruled out by a pattern before any decoding; with no filter nothing is decoded.
# Returns {letters examined (fewer: the list ran out), events put back on the queue}; replayed events join the
# queue in dead-letter order.
REPLAY = """
local reason, status, email = ARGV[2], ARGV[3], ARGV[4]
local status_pattern = (status ~= '' and status ~= 'none') and ('"status"%s*:%s*' .. status) or nil
local items = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if not items then return {0, 0} end
local events, kept = {}, {}
for _, item in ipairs(items) do
  local cut = string.find(item, '\\n', 1, true)
  local match = cut ~= nil
  local meta, event
  if match and status_pattern then
    local at = string.find(item, status_pattern)
    match = at ~= nil and at < cut
  end
  if match then
    event = string.sub(item, cut + 1)
    if reason ~= '' or status ~= '' then
      local ok, decoded = pcall(cjson.decode, string.sub(item, 1, cut - 1))
      match = ok and type(decoded) == 'table'
      meta = decoded
    end
  end
  if match and reason ~= '' then
    match = type(meta.reason) == 'string' and string.find(meta.reason, reason, 1, true) ~= nil
  end
  if match and status == 'none' then
    match = meta.status == nil or meta.status == cjson.null
  elseif match and status ~= '' then
    match = type(meta.status) == 'number' and meta.status == tonumber(status)
  end
  if match and email ~= '' then
    local ok, decoded = pcall(cjson.decode, event)
    match = ok and type(decoded) == 'table' and type(decoded.email) == 'string'
      and string.find(string.lower(decoded.email), email, 1, true) ~= nil
  end
  if match then events[#events + 1] = event else kept[#kept + 1] = item end
end
if #events > 0 then redis.call('RPUSH', KEYS[2], unpack(events)) end
if #kept > 0 then redis.call('RPUSH', KEYS[1], unpack(kept)) end
return {#items, #events}
"""

# RECORD_POST: count one POST for operators (the post task, after each POST): the cumulative counters and
# duration histogram, this minute's series, the list of recent POSTs. One script: as a MULTI of eight to
# eleven commands it cost the post task as much client CPU as BEGIN (profiled).
# KEYS[1] counters hash, KEYS[2] the minute's series hash, KEYS[3] recent POSTs list
# ARGV[1] the POST's seconds (added to the counters' duration_sum), ARGV[2] seconds the minute is kept,
# ARGV[3] POSTs the list keeps, ARGV[4] the POST as JSON (pushed on the list), ARGV[5] n, then n (field,
# increment) pairs for the counters, then (field, increment) pairs for the minute
RECORD_POST = """
local counters = 5 + 2 * tonumber(ARGV[5])
for i = 6, counters, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBYFLOAT', KEYS[1], 'duration_sum', ARGV[1])
for i = counters + 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
redis.call('LPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
return 1
"""

# RECORD_DEPTH: note the queue's length in a minute of the operators' series (the flush, once a tick).
# KEYS[1] queue list, KEYS[2] the minute's series hash
# ARGV[1] seconds the minute is kept
# The minute keeps the largest length seen, so a backlog drained within the minute still shows.
# Returns the queue's length.
RECORD_DEPTH = """
local depth = redis.call('LLEN', KEYS[1])
local seen = tonumber(redis.call('HGET', KEYS[2], 'depth') or '-1')
if depth > seen then redis.call('HSET', KEYS[2], 'depth', depth) end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
return depth
"""

# REMOVE_LETTERS: take chosen dead letters out of the list, and put their events back on the queue
# (replay) or not (purge).
# KEYS[1] dead-letter list, KEYS[2] queue list
# ARGV[1] a tombstone value no dead letter can have, ARGV[2] '1' to queue the events, '0' to drop them,
# then triples: the index where the letter was seen, the letter as stored, its event part
# A letter still at its index is overwritten with the tombstone there (LINDEX/LSET, no scan); one that
# moved is looked up with LPOS. All tombstones then go in one LREM, so a page of letters costs one pass
# over the list, not one per letter. A letter already gone (replayed or purged by someone else) is skipped.
# Returns the number of letters removed.
REMOVE_LETTERS = """
local tomb, removed, events = ARGV[1], 0, {}
for i = 3, #ARGV, 3 do
  local index = tonumber(ARGV[i])
  if redis.call('LINDEX', KEYS[1], index) ~= ARGV[i + 1] then
    index = redis.call('LPOS', KEYS[1], ARGV[i + 1])
  end
  if index then
    redis.call('LSET', KEYS[1], index, tomb)
    removed = removed + 1
    events[#events + 1] = ARGV[i + 2]
  end
end
if removed > 0 then
  redis.call('LREM', KEYS[1], 0, tomb)
  if ARGV[2] == '1' then redis.call('RPUSH', KEYS[2], unpack(events)) end
end
return removed
"""

# Outbox row records (RELAY, FORGET) travel as one string of 16-byte records, cut apart here.
_RECORDS = """
local function split(blob)
  local records = {}
  for at = 1, #blob, 16 do records[#records + 1] = string.sub(blob, at, at + 15) end
  return records
end
"""

# RELAY: push the events of outbox rows onto the queue, each row once, however often it is relayed.
# A relay pushes, then deletes the rows in its database transaction; if it dies or loses its answer
# in between, the rows are still in the table and the next relay brings them again: the record this
# script kept of the first attempt makes it skip them, and that relay only deletes them.
# Records are sets of one database alias per period of time; a row is looked up in this period's and
# the previous one's, so it is remembered for at least one period whichever period it was pushed in.
# A row's record is 16 bytes: its id (8 bytes, big-endian) and a digest of its event (8 bytes).
# KEYS[1] queue list, KEYS[2] this period's record set, KEYS[3] the previous period's record set,
# KEYS[4] the set holding the records in ARGV[3]
# ARGV[1] seconds this period's set lives after its last write (two periods), ARGV[2] the rows' records
#         end to end (n rows: 16 * n bytes, n at most 1000), ARGV[3] records to drop first (the previous
#         chunk's, whose delete has committed; empty for none), ARGV[4 .. 3+n] the events as queued, in order
# Returns the number of events pushed (fewer than n when some had been pushed before).
# One argument for all records and a handful of commands for the whole chunk (SMISMEMBER: Redis 6.2+),
# none per row; the sets are usually empty (every committed chunk drops its records), then not even read.
RELAY = (
    _RECORDS
    + """
if #ARGV[3] > 0 then redis.call('SREM', KEYS[4], unpack(split(ARGV[3]))) end
local records = split(ARGV[2])
local n = #records
local function lookup(key)
  if redis.call('EXISTS', key) == 0 then return nil end
  return redis.call('SMISMEMBER', key, unpack(records))
end
local now, before = lookup(KEYS[2]), lookup(KEYS[3])
local fresh, events = records, nil
if now or before then
  fresh, events = {}, {}
  for k = 1, n do
    if not ((now and now[k] == 1) or (before and before[k] == 1)) then
      fresh[#fresh + 1] = records[k]
      events[#events + 1] = ARGV[3 + k]
    end
  end
end
if #fresh > 0 then
  redis.call('SADD', KEYS[2], unpack(fresh))
  if events then
    redis.call('RPUSH', KEYS[1], unpack(events))
  else
    redis.call('RPUSH', KEYS[1], unpack(ARGV, 4, 3 + n))
  end
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return #fresh
"""
)

# FORGET: drop the records of relayed rows whose delete has committed (they can never come back), when
# no next RELAY call carries them.
# KEYS[1] the record set RELAY wrote them to
# ARGV[1] the rows' records end to end, as given to RELAY
# Returns the number of records dropped.
FORGET = (
    _RECORDS
    + """
return redis.call('SREM', KEYS[1], unpack(split(ARGV[1])))
"""
)
