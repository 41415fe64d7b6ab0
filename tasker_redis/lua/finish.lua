-- Record the outcomes of a worker's finished tasks, put back the tasks it
-- claimed but will not start, then claim its next tasks: one round trip.
-- KEYS[2 * i] and KEYS[2 * i + 1]: the result key and the inbox of the
-- waiting producer (or the result key again) of the i-th outcome.
-- ARGV: 1 worker id, 2 lease ms, 3 tasks to claim, 4 result TTL ms,
-- 5 number of outcomes n, 6 the worker's call number (see accept_call) or
-- "" for a releaser, then for each outcome: id, claim, encoded result,
-- counter to increment, "1" to push to the inbox, encoded dead-letter entry
-- or "", "1" if fresh (see forget_task); then for each task to put back:
-- id, claim, "1" if high priority.
-- The claim check fences out a worker whose lease expired: its late result
-- is rejected, so a task has one result even if it ran twice.
-- Returns {recorded flags (1 or 0 per outcome), claimed tasks}.
local ttl = ARGV[4]
local outcomes = tonumber(ARGV[5])
if not accept_call(ARGV[1], ARGV[6]) then
  local none = {}
  for i = 1, outcomes do
    none[i] = 0
  end
  return {none, {}}
end
local recorded = {}
for i = 1, outcomes do
  local at = 7 + (i - 1) * 7
  local id, claim, result = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  recorded[i] = 0
  if redis.call('HGET', K.claims, id) == claim then
    recorded[i] = 1
    forget_task(id, ARGV[at + 6] == '1')
    local result_key, inbox = KEYS[2 * i], KEYS[2 * i + 1]
    redis.call('DEL', result_key)
    redis.call('RPUSH', result_key, result)
    redis.call('PEXPIRE', result_key, ttl)
    if ARGV[at + 4] == '1' then
      redis.call('RPUSH', inbox, result)
      redis.call('PEXPIRE', inbox, ttl)
    end
    if ARGV[at + 5] ~= '' then
      redis.call('LPUSH', K.dead, ARGV[at + 5])
    end
    redis.call('HINCRBY', K.counters, ARGV[at + 3], 1)
  end
end
-- Put back in reverse so the first task claimed is again the first popped.
local first_return = 7 + outcomes * 7
for at = #ARGV - 2, first_return, -3 do
  local id = ARGV[at]
  if redis.call('HGET', K.claims, id) == ARGV[at + 1] then
    redis.call('ZREM', K.inflight, id)
    redis.call('HDEL', K.claims, id)
    if ARGV[at + 2] == '1' then
      redis.call('RPUSH', K.high, id)
    else
      redis.call('RPUSH', K.normal, id)
    end
    push_wake_token()
  end
end
return {recorded, claim_tasks(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))}
