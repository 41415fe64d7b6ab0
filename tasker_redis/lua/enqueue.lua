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
local queued = 0
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local result_key = KEYS[2 + (i - 5) / 2]
  if redis.call('HEXISTS', K.tasks, id) == 0 and redis.call('EXISTS', result_key) == 0 then
    redis.call('HSET', K.tasks, id, ARGV[i + 1])
    if ARGV[2] == '1' then
      redis.call('SADD', K.once, id)
    end
    redis.call('LPUSH', queue, id)
    push_wake_token()
    queued = queued + 1
  end
end
if queued > 0 then
  redis.call('HINCRBY', K.counters, 'queued', queued)
  -- Count arrivals in the metrics slot of the current server time.
  local key = KEYS[1] .. 'metrics:' .. math.floor(server_time_ms() / tonumber(ARGV[3]))
  redis.call('HINCRBY', key, 'arrived', queued)
  redis.call('PEXPIRE', key, ARGV[4])
end
return queued
