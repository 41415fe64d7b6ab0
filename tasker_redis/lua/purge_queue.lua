-- Delete every task waiting in the queue: its id from both queue lists, its
-- message and bookkeeping, and all wake tokens. Tasks in flight are left to
-- their workers: their ids are not on the queue lists, and the message of an
-- id that is somehow both queued and leased is kept.
-- Returns the number of tasks deleted.
local purged = 0
for _, queue in ipairs({K.high, K.normal}) do
  for _, id in ipairs(redis.call('LRANGE', queue, 0, -1)) do
    if not redis.call('ZSCORE', K.inflight, id) and redis.call('HDEL', K.tasks, id) == 1 then
      redis.call('SREM', K.once, id)
      redis.call('HDEL', K.retries, id)
      redis.call('HDEL', K.crashes, id)
      purged = purged + 1
    end
  end
  redis.call('DEL', queue)
end
redis.call('DEL', K.wake)
return purged
