-- Release tasks whose lease expired by server time: their worker stopped
-- sending heartbeats. Also drop workers silent for longer than ARGV[5] ms.
-- ARGV: 1 max crashes, 2 releaser id, 3 lease ms, 4 max tasks to release,
-- 5 worker silence ms. Returns the tasks the releaser must fail.
local now = server_time_ms()
local expired = redis.call('ZRANGEBYSCORE', K.inflight, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local failures = {}
for _, id in ipairs(expired) do
  local failure = release_task(id, true, tonumber(ARGV[1]), ARGV[2], now + tonumber(ARGV[3]), true)
  if failure then
    failures[#failures + 1] = failure
  end
end
redis.call('ZREMRANGEBYSCORE', K.workers, '-inf', now - tonumber(ARGV[5]))
return failures
