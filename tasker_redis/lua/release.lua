-- Release every task that worker ARGV[1] holds, after it died or was killed,
-- and remove the worker from the live workers and its info hash (KEYS[2]).
-- ARGV: 1 worker id, 2 "1" to count a crash, 3 max crashes, 4 releaser id,
-- 5 lease ms, 6 the fencing token of the last task the worker started ("0"
-- if none since its last recorded results, "-1" if unknown), 7 "1" if that
-- task was still running. Returns the tasks the releaser must fail (see
-- release_task).
--
-- A worker runs its claimed tasks in token order, so a held task with a
-- lower token already ran (its result unrecorded), one with a higher token
-- never started, and only the running one can have caused the crash. Only
-- that one counts a crash; a `_once` task fails only if it started. With an
-- unknown token every task counts as started and running.
local count_crash = ARGV[2] == '1'
local deadline = server_time_ms() + tonumber(ARGV[5])
local started = tonumber(ARGV[6])
local running = ARGV[7] == '1'
local entries = redis.call('HGETALL', K.claims)
local failures = {}
for i = 1, #entries, 2 do
  -- A claim is "<fencing token>:<worker id>".
  local token, worker = string.match(entries[i + 1], '^(%d+):(.*)$')
  if worker == ARGV[1] then
    token = tonumber(token)
    local was_started = started < 0 or (started > 0 and token <= started)
    local suspect = count_crash and (started < 0 or (running and token == started))
    local failure = release_task(
      entries[i], suspect, tonumber(ARGV[3]), ARGV[4], deadline, was_started
    )
    if failure then
      failures[#failures + 1] = failure
    end
  end
end
redis.call('ZREM', K.workers, ARGV[1])
redis.call('HDEL', K.calls, ARGV[1])
redis.call('DEL', KEYS[2])
return failures
