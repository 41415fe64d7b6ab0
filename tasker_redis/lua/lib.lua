-- Functions shared by the scripts. scripts.py puts a table K of the queue's
-- fixed key names, built from the prefix in KEYS[1], before this file and a
-- script after it.

local function server_time_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function push_wake_token()
  redis.call('LPUSH', K.wake, '1')
end

-- Fence out a worker's calls that arrive out of order. A request can sit in
-- a stalled connection while the worker times out and sends a newer call on
-- another one. Run late, the old call would lease tasks to a worker that
-- never hears of them. So each worker numbers its calls, and a number not
-- above the last one seen is rejected. An empty number skips the check.
local function accept_call(worker_id, number)
  if number == '' then
    return true
  end
  local last = tonumber(redis.call('HGET', K.calls, worker_id) or '0')
  if tonumber(number) <= last then
    return false
  end
  redis.call('HSET', K.calls, worker_id, number)
  return true
end

-- Every push adds one wake token. Trimming to the queued count keeps the
-- list bounded and never below the number of queued tasks, so an idle worker
-- wakes whenever a task is queued and does not spin when none is. Returns the
-- queued count.
local function trim_wake_tokens()
  local queued = redis.call('LLEN', K.high) + redis.call('LLEN', K.normal)
  if queued == 0 then
    redis.call('DEL', K.wake)
  else
    redis.call('LTRIM', K.wake, 0, queued - 1)
  end
  return queued
end

-- Drop every trace of a task except its result. Pass fresh when the claim
-- being finished found no retry or crash count. Both counts change only
-- with a new claim, which the caller's claim check rules out, so there are
-- none to clear.
local function forget_task(id, fresh)
  redis.call('HDEL', K.tasks, id)
  redis.call('ZREM', K.inflight, id)
  redis.call('HDEL', K.claims, id)
  redis.call('SREM', K.once, id)
  if not fresh then
    redis.call('HDEL', K.retries, id)
    redis.call('HDEL', K.crashes, id)
  end
end

-- Take up to `count` tasks, high priority first, and lease each to the worker
-- until server time plus lease_ms. The pop and the lease happen in one script,
-- so a task is always either queued or leased, even if the worker dies now.
-- Returns one {id, claim, message, retries, crashes, priority} per task.
local function claim_tasks(worker_id, lease_ms, count)
  local claimed = {}
  if count <= 0 then
    return claimed
  end
  local deadline = nil
  -- Both queues were found empty, so no wake token is owed.
  local drained = false
  while #claimed < count do
    local priority = 1
    local id = redis.call('RPOP', K.high)
    if not id then
      priority = 0
      id = redis.call('RPOP', K.normal)
    end
    if not id then
      drained = true
      break
    end
    local message = redis.call('HGET', K.tasks, id)
    -- An id with no message was purged while queued: nothing to run.
    if message then
      deadline = deadline or server_time_ms() + lease_ms
      local claim = redis.call('INCR', K.fence) .. ':' .. worker_id
      redis.call('ZADD', K.inflight, deadline, id)
      redis.call('HSET', K.claims, id, claim)
      local retries = tonumber(redis.call('HGET', K.retries, id) or '0')
      local crashes = tonumber(redis.call('HGET', K.crashes, id) or '0')
      claimed[#claimed + 1] = {id, claim, message, retries, crashes, priority}
    end
  end
  if drained then
    redis.call('DEL', K.wake)
  else
    trim_wake_tokens()
  end
  return claimed
end

-- Put a task whose worker is gone back at the front of the high-priority
-- queue. A `_once` task, or one that has crashed its worker more than
-- max_crashes times, is instead leased to the releasing process, which writes
-- its failure result; the result is returned as {id, claim, message, crashes}.
-- started is false for a task known never to have started, which goes back
-- even if it is `_once`.
local function release_task(id, count_crash, max_crashes, releaser, deadline, started)
  local message = redis.call('HGET', K.tasks, id)
  if not message then
    redis.call('ZREM', K.inflight, id)
    redis.call('HDEL', K.claims, id)
    return nil
  end
  local crashes = tonumber(redis.call('HGET', K.crashes, id) or '0')
  if count_crash then
    crashes = redis.call('HINCRBY', K.crashes, id, 1)
  end
  local once = started and redis.call('SISMEMBER', K.once, id) == 1
  if once or crashes > max_crashes then
    local claim = redis.call('INCR', K.fence) .. ':' .. releaser
    redis.call('HSET', K.claims, id, claim)
    redis.call('ZADD', K.inflight, deadline, id)
    return {id, claim, message, crashes}
  end
  redis.call('ZREM', K.inflight, id)
  redis.call('HDEL', K.claims, id)
  redis.call('RPUSH', K.high, id)
  push_wake_token()
  return nil
end
