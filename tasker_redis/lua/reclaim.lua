-- Put back tasks leased to worker ARGV[1] that the worker does not know it
-- holds: the reply of a claim that leased them was lost with the connection,
-- so they never started. ARGV[2...]: the ids the worker does hold.
-- They go to the front of the high-priority queue without counting a crash.
-- Returns the number put back.
local known = {}
for i = 2, #ARGV do
  known[ARGV[i]] = true
end
local entries = redis.call('HGETALL', K.claims)
local returned = 0
for i = 1, #entries, 2 do
  local id = entries[i]
  if not known[id] and string.match(entries[i + 1], '^%d+:(.*)$') == ARGV[1] then
    redis.call('ZREM', K.inflight, id)
    redis.call('HDEL', K.claims, id)
    redis.call('RPUSH', K.high, id)
    push_wake_token()
    returned = returned + 1
  end
end
return returned
