-- Move dead-letter entries back to the queues. For each entry, the removal
-- from the dead-letter list and the queueing happen in one step, so a retry
-- never loses an entry, and two operators retrying the same entry queue its
-- task once.
-- KEYS[1 + i]: the result key of the i-th entry's task.
-- ARGV, five per entry: the encoded entry exactly as stored, the task id,
-- the task message, "1" for the high-priority queue, "1" for at-most-once.
-- Returns one status per entry: 1 queued; 0 the entry is no longer in the
-- list; -1 the task id is queued or running already, so the entry is kept.
-- An entry already gone whose message is queued or running under its id
-- also returns 1: the client may have resent this call after losing the
-- reply to the first, which queued it.
local statuses = {}
for at = 1, #ARGV, 5 do
  local n = (at - 1) / 5 + 1
  local entry, id, message = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  if not redis.call('LPOS', K.dead, entry) then
    if redis.call('HGET', K.tasks, id) == message then
      statuses[n] = 1
    else
      statuses[n] = 0
    end
  elseif redis.call('HEXISTS', K.tasks, id) == 1 then
    statuses[n] = -1
  else
    redis.call('LREM', K.dead, 1, entry)
    -- The old result reports the task as dead-lettered. Without it, a caller
    -- waiting on the task id gets the outcome of the new run.
    redis.call('DEL', KEYS[1 + n])
    redis.call('HSET', K.tasks, id, message)
    if ARGV[at + 4] == '1' then
      redis.call('SADD', K.once, id)
    end
    if ARGV[at + 3] == '1' then
      redis.call('LPUSH', K.high, id)
    else
      redis.call('LPUSH', K.normal, id)
    end
    push_wake_token()
    statuses[n] = 1
  end
end
return statuses
