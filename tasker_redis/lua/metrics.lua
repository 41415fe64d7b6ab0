-- Add a process's task counts to the metrics hash of the current time slot
-- (server time), which expires after the sliding window.
-- ARGV: 1 slot ms, 2 TTL ms, 3 min and 4 max execution time in µs (or ""),
-- then field, increment pairs. Returns the slot number.
local slot = math.floor(server_time_ms() / tonumber(ARGV[1]))
local key = KEYS[1] .. 'metrics:' .. slot
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', key, ARGV[i], ARGV[i + 1])
  -- run_task outcomes also go to the lifetime counters.
  if string.sub(ARGV[i], 1, 9) == 'run_task_' then
    redis.call('HINCRBY', K.counters, ARGV[i], ARGV[i + 1])
  end
end
if ARGV[3] ~= '' then
  local low = tonumber(redis.call('HGET', key, 'e_min_us') or ARGV[3])
  redis.call('HSET', key, 'e_min_us', math.min(low, tonumber(ARGV[3])))
  local high = tonumber(redis.call('HGET', key, 'e_max_us') or ARGV[4])
  redis.call('HSET', key, 'e_max_us', math.max(high, tonumber(ARGV[4])))
end
redis.call('PEXPIRE', key, ARGV[2])
return slot
