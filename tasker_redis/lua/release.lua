-- Release every task that worker ARGV[1] holds, after it died or was killed,
-- and remove the worker from the live workers and its info hash (KEYS[2]).
-- ARGV: 1 worker id, 2 "1" to count a crash, 3 max crashes, 4 releaser id,
-- 5 lease ms. Returns the tasks the releaser must fail (see release_task).
local count_crash = ARGV[2] == '1'
local deadline = server_time_ms() + tonumber(ARGV[5])
local entries = redis.call('HGETALL', K.claims)
local failures = {}
for i = 1, #entries, 2 do
  -- A claim is "<fencing token>:<worker id>".
  if string.match(entries[i + 1], '^%d+:(.*)$') == ARGV[1] then
    local failure = release_task(entries[i], count_crash, tonumber(ARGV[3]), ARGV[4], deadline)
    if failure then
      failures[#failures + 1] = failure
    end
  end
end
redis.call('ZREM', K.workers, ARGV[1])
redis.call('HDEL', K.calls, ARGV[1])
redis.call('DEL', KEYS[2])
return failures
