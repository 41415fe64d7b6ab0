-- Queue tasks. ARGV: priority ("1" high, "0" normal), once ("1" or "0"),
-- the metrics slot ms and TTL ms, then id, message for each task.
-- KEYS[2...]: the result key of each task.
-- A task whose id is known or already has a result is skipped, so a client
-- may resend the call after a lost reply without queueing a task twice.
-- Returns the number of tasks queued.
local queue = K.normal
if ARGV[1] == '1' then
  queue = K.high
end
-- The new ids, and id, message pairs for HSET. chosen marks the ids picked
-- so far, so an id that comes twice in one call is queued once.
local ids = {}
local fields = {}
local chosen = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local result_key = KEYS[2 + (i - 5) / 2]
  if not chosen[id] and redis.call('HEXISTS', K.tasks, id) == 0
      and redis.call('EXISTS', result_key) == 0 then
    chosen[id] = true
    ids[#ids + 1] = id
    fields[#fields + 1] = id
    fields[#fields + 1] = ARGV[i + 1]
  end
end
local queued = #ids
if queued == 0 then
  return 0
end
-- One command per chunk of ids instead of one per task. The Lua in Redis 7.0
-- rejects unpack() of 8000 values or more, so a chunk is 1000 ids.
local chunk = 1000
local tokens = {}
for i = 1, math.min(chunk, queued) do
  tokens[i] = '1'
end
for first = 1, queued, chunk do
  local last = math.min(first + chunk - 1, queued)
  redis.call('HSET', K.tasks, unpack(fields, 2 * first - 1, 2 * last))
  if ARGV[2] == '1' then
    redis.call('SADD', K.once, unpack(ids, first, last))
  end
  redis.call('LPUSH', queue, unpack(ids, first, last))
  -- One wake token per queued task, as push_wake_token adds per push.
  redis.call('LPUSH', K.wake, unpack(tokens, 1, last - first + 1))
end
redis.call('HINCRBY', K.counters, 'queued', queued)
-- Count arrivals in the metrics slot of the current server time.
local key = KEYS[1] .. 'metrics:' .. math.floor(server_time_ms() / tonumber(ARGV[3]))
-- The first write to a slot sets its expiry. Every script that writes a
-- slot sets one, so later writes need none.
if redis.call('HINCRBY', key, 'arrived', queued) == queued then
  redis.call('PEXPIRE', key, ARGV[4])
end
return queued
