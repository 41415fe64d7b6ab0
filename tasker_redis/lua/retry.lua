-- Queue a claimed task again at the back of the high-priority queue after an
-- unhealthy failure. ARGV: id, claim. Returns 1, or 0 if the claim is stale.
local id = ARGV[1]
if redis.call('HGET', K.claims, id) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', K.inflight, id)
redis.call('HDEL', K.claims, id)
redis.call('HINCRBY', K.retries, id, 1)
redis.call('LPUSH', K.high, id)
push_wake_token()
redis.call('HINCRBY', K.counters, 'retried', 1)
return 1
