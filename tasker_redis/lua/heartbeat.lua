-- Mark worker ARGV[1] alive and extend the leases it still holds.
-- KEYS[2]: the worker's info hash. ARGV: 1 worker id, 2 lease ms, 3 info TTL
-- ms, 4 current task id or "", then id, claim for each task the worker holds.
-- A lease is extended only while the claim is the worker's, so a worker that
-- lost a task to recovery cannot take it back. Returns the server time in ms.
local now = server_time_ms()
local deadline = now + tonumber(ARGV[2])
redis.call('ZADD', K.workers, now, ARGV[1])
redis.call('HSET', KEYS[2], 'current_task', ARGV[4], 'heartbeat_ms', now)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for i = 5, #ARGV, 2 do
  if redis.call('HGET', K.claims, ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', K.inflight, 'XX', deadline, ARGV[i])
  end
end
return now
