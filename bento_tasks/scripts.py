"""Every Lua script the buffer runs, in one place.

Each script keeps one step of a batch's life atomic, so two flushes, a crashed
worker or a retry racing a lease recovery can never take, send or lose the same
event twice. Times come from Redis ``TIME`` so workers with skewed clocks agree.
Keys all carry the same ``{prefix}`` hash tag: the scripts also run on Redis Cluster.

A batch is identified by its id; every hand-over (retry, deferral, lease recovery,
split) renames the batch to a fresh id, so a duplicate or late Celery message that
still names the old id finds nothing and does nothing.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# CLAIM: move up to ARGV[1] events from the queue into a new batch and lease it.
# KEYS[1] queue list, KEYS[2] in-flight zset (batch id -> lease deadline), KEYS[3] new batch list
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
end
return n
"""
)

# BEGIN: start posting a batch: check it is still ours, honour a pause, take a rate-limit slot
# (GCRA with no burst: one POST every ARGV[3] seconds across all workers), extend the lease.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] limiter key (theoretical arrival time),
# KEYS[4] paused-until key
# ARGV[1] batch id, ARGV[2] lease seconds, ARGV[3] seconds between POSTs (0: no limit),
# ARGV[4] longest wait the caller will sleep; a longer one is not reserved
# Returns {-1} if the batch was handed to someone else, {0, wait} to come back later,
# {1, wait, events} to sleep `wait` seconds and POST.
BEGIN = (
    _NOW
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {-1} end
local paused = tonumber(redis.call('GET', KEYS[4]) or '0')
if paused > now then return {0, tostring(paused - now)} end
local wait, interval = 0, tonumber(ARGV[3])
if interval > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[3]) or '0'), now)
  wait = tat - now
  if wait > tonumber(ARGV[4]) then return {0, tostring(wait)} end
  local ttl = math.ceil((tat + interval - now) * 1000) + 1000
  redis.call('SET', KEYS[3], tostring(tat + interval), 'PX', ttl)
end
redis.call('ZADD', KEYS[1], now + wait + tonumber(ARGV[2]), ARGV[1])
return {1, tostring(wait), redis.call('LRANGE', KEYS[2], 0, -1)}
"""
)

# ACK: Bento accepted the batch: forget it and count it.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] stats hash, KEYS[4] failure reports list
# ARGV[1] batch id, ARGV[2] events Bento recorded, ARGV[3] events Bento reported failed,
# ARGV[4] report (JSON) kept, newest first, when ARGV[3] > 0: Bento does not say which events failed
# Returns 1 if the batch was still ours, 0 if a lease recovery had already handed it over.
ACK = """
local ours = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'delivered', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'failed', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'batches', 1)
if tonumber(ARGV[3]) > 0 then
  redis.call('LPUSH', KEYS[4], ARGV[4])
  redis.call('LTRIM', KEYS[4], 0, 999)
end
return ours
"""

# HANDOFF: give a batch a new id and lease (a retry, a deferral, or recovery from a dead worker).
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] batch list under the new id
# ARGV[1] batch id, ARGV[2] new id, ARGV[3] lease seconds from now,
# ARGV[4] '1' to act only if the current lease has run out (recovery), else '0'
# Returns 1 if handed over, 0 if the batch is gone or (recovery) its lease is still live.
HANDOFF = (
    _NOW
    + """
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline then return 0 end
if ARGV[4] == '1' and tonumber(deadline) > now then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('RENAME', KEYS[2], KEYS[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)

# SPLIT: Bento refused the batch as a whole (400/413/422): cut it in two new batches.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] first half, KEYS[4] second half
# ARGV[1] batch id, ARGV[2] first half id, ARGV[3] second half id, ARGV[4] lease seconds
# Returns 1 if split, 0 if the batch was no longer ours.
SPLIT = (
    _NOW
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local mid = math.floor(#items / 2)
redis.call('RPUSH', KEYS[3], unpack(items, 1, mid))
redis.call('RPUSH', KEYS[4], unpack(items, mid + 1))
redis.call('DEL', KEYS[2])
local deadline = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], deadline, ARGV[2], deadline, ARGV[3])
return 1
"""
)

# BURY: move every event of a batch to the dead letters (retries exhausted, or Bento refused it).
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] dead-letter list
# ARGV[1] batch id, ARGV[2] dead-letter header (JSON: reason, status, attempts, time)
# Each dead letter is the header, a newline, then the event exactly as queued.
# Returns the number of events buried.
BURY = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i, item in ipairs(items) do
  redis.call('RPUSH', KEYS[3], ARGV[2] .. '\\n' .. item)
end
redis.call('DEL', KEYS[2])
return #items
"""

# REJECT: take events the post task found invalid out of its batch into the dead letters.
# KEYS[1] in-flight zset, KEYS[2] batch list, KEYS[3] dead-letter list
# ARGV[1] batch id, then pairs: ARGV[2k] the event as queued, ARGV[2k+1] its dead-letter header
# Returns the number of events left in the batch (0: it is gone).
REJECT = """
for i = 2, #ARGV, 2 do
  if redis.call('LREM', KEYS[2], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[3], ARGV[i + 1] .. '\\n' .. ARGV[i])
  end
end
local left = redis.call('LLEN', KEYS[2])
if left == 0 then redis.call('ZREM', KEYS[1], ARGV[1]) end
return left
"""

# PAUSE: stop every worker's POSTs for a while (429, or a configuration fault).
# KEYS[1] paused-until key
# ARGV[1] seconds from now; an existing longer pause is kept
# Returns {1 if this call started the pause (none was running), 0 if it extended or kept one,
#          seconds until the pause ends}.
PAUSE = (
    _NOW
    + """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = now + tonumber(ARGV[1])
local started = current <= now and 1 or 0
if wanted > current then
  redis.call('SET', KEYS[1], tostring(wanted), 'PXAT', math.ceil(wanted * 1000))
  current = wanted
end
return {started, tostring(current - now)}
"""
)

# REPLAY: put one dead letter's event back on the queue.
# KEYS[1] dead-letter list, KEYS[2] queue list
# ARGV[1] the dead letter as stored, ARGV[2] the event part of it
# Returns 1 if moved, 0 if someone else replayed or purged it first.
REPLAY = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
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

# REPLAY_MATCHING: put every dead letter matching a filter back on the queue, in one linear pass
# (one LREM per letter would cost a pass per letter: minutes with 100,000 of them).
# KEYS[1] dead-letter list, KEYS[2] queue list
# ARGV[1] text the reason must contain ('' any), ARGV[2] status: '' any, 'none' no status, else a code,
# ARGV[3] text the event's email must contain, lower-case ASCII ('' any),
# ARGV[4] a tombstone value no dead letter can have (a unique string not starting with '{')
# The rules are those of buffer.DeadLetterFilter. Matches are overwritten with the tombstone in place
# (LSET: no index shifts), then all tombstones go in one LREM; letters left keep their order and replayed
# events join the queue in dead-letter order. A letter whose header or event does not parse never
# matches a filter on it (it stays). A header without '"status": N' cannot have status N (a quote inside
# a JSON string is escaped), so most letters are ruled out by a pattern before any decoding; with no
# filter at all nothing is decoded and the list is dropped whole.
# Returns the number of events put back.
REPLAY_MATCHING = """
local reason, status, email, tomb = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local everything = reason == '' and status == '' and email == ''
local status_pattern = (status ~= '' and status ~= 'none') and ('"status"%s*:%s*' .. status) or nil
local total = redis.call('LLEN', KEYS[1])
local moved, kept = 0, {}
for start = 0, total - 1, 1000 do
  local items = redis.call('LRANGE', KEYS[1], start, start + 999)
  local events = {}
  for offset, item in ipairs(items) do
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
    if match then
      events[#events + 1] = event
      if not everything then redis.call('LSET', KEYS[1], start + offset - 1, tomb) end
    elseif everything then
      kept[#kept + 1] = item
    end
  end
  if #events > 0 then
    redis.call('RPUSH', KEYS[2], unpack(events))
    moved = moved + #events
  end
end
if everything and moved > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #kept, 1000 do redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept))) end
elseif moved == total then
  redis.call('DEL', KEYS[1])
elseif moved > 0 then
  redis.call('LREM', KEYS[1], 0, tomb)
end
return moved
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
