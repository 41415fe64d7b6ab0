-- Read queue depths, workers seen in the last ARGV[1] ms, and the counters.
-- Returns {normal, high, in flight, workers alive, dead letters, counters}.
local now = server_time_ms()
return {
  redis.call('LLEN', K.normal),
  redis.call('LLEN', K.high),
  redis.call('ZCARD', K.inflight),
  redis.call('ZCOUNT', K.workers, now - tonumber(ARGV[1]), '+inf'),
  redis.call('LLEN', K.dead),
  redis.call('HGETALL', K.counters),
}
