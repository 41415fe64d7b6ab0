-- Lease task ARGV[1] to releaser ARGV[3] if it is still leased to worker ARGV[2],
-- so the releaser can record its failure. ARGV[4]: lease ms.
-- Returns {id, claim, message, crashes}, or nil if the task is no longer
-- leased to that worker.
local id = ARGV[1]
local claim = redis.call('HGET', K.claims, id)
if not claim or string.match(claim, '^%d+:(.*)$') ~= ARGV[2] then
  return nil
end
local message = redis.call('HGET', K.tasks, id)
if not message then
  return nil
end
local new_claim = redis.call('INCR', K.fence) .. ':' .. ARGV[3]
redis.call('HSET', K.claims, id, new_claim)
redis.call('ZADD', K.inflight, server_time_ms() + tonumber(ARGV[4]), id)
local crashes = tonumber(redis.call('HGET', K.crashes, id) or '0')
return {id, new_claim, message, crashes}
