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
