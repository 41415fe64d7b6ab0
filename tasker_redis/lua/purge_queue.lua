-- Delete up to ARGV[1] waiting tasks, high priority first and oldest first:
-- their ids from the queue lists, their messages and bookkeeping. Tasks in
-- flight are left to their workers: their ids are not on the queue lists,
-- and the message of an id that is somehow both queued and leased is kept.
-- The caller repeats the call with a small limit, so no single call blocks
-- Redis for the whole queue.
-- Returns {tasks deleted, ids removed from the lists, ids still queued}.
local limit = tonumber(ARGV[1])
local deleted, removed = 0, 0
for _, queue in ipairs({K.high, K.normal}) do
  if removed < limit then
    -- Workers pop from the tail, so the oldest tasks are there.
    local ids = redis.call('RPOP', queue, limit - removed) or {}
    for _, id in ipairs(ids) do
      removed = removed + 1
      if not redis.call('ZSCORE', K.inflight, id) and redis.call('HDEL', K.tasks, id) == 1 then
        redis.call('SREM', K.once, id)
        redis.call('HDEL', K.retries, id)
        redis.call('HDEL', K.crashes, id)
        deleted = deleted + 1
      end
    end
  end
end
return {deleted, removed, trim_wake_tokens()}
