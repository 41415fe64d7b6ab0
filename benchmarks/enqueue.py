"""Measure queue_many against pipelined LPUSH of the same encoded messages.

Starts a private redis-server on loopback (append-only, fsync every second)
and, in one run, alternates rounds of:

- queue_many of --tasks no-op tasks with no arguments;
- one pipeline (transaction=False) of LPUSH calls, on the manager's own
  redis-py client, that pushes the messages a queue_many round stored, so
  both sides send the same bytes per task.

No worker runs. Every round starts on an empty server (FLUSHALL). Prints
the median rate of each side and their ratio.

Run from the repository root: python -m benchmarks.enqueue
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from benchmarks.noop_tasks import make_config, noop
from tasker_redis import TaskManager
from tasker_redis.local_server import LocalRedisServer

LPUSH_KEY = "bench:lpush"


def time_queue_many(manager: TaskManager, tasks: int) -> float:
    started = time.perf_counter()
    futures = manager.queue_many(noop, [()] * tasks)
    elapsed = time.perf_counter() - started
    # No worker runs, so cancel the futures and let the listener drop them,
    # as it drops futures that a result completed.
    for future in futures:
        future.cancel()
    manager._listener.pending()
    return tasks / elapsed


def time_lpush(manager: TaskManager, messages: list[bytes]) -> float:
    started = time.perf_counter()
    with manager._client.pipeline(transaction=False) as pipe:
        for message in messages:
            pipe.lpush(LPUSH_KEY, message)
        pipe.execute()
    return len(messages) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5_000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each side")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as directory,
        LocalRedisServer(directory) as server,
    ):
        os.environ["TASKER_REDIS_URL"] = server.url
        manager = TaskManager(make_config())
        client = manager._client
        print(
            f"redis-server {client.info('server')['redis_version']} on {server.url}, "
            f"Python {sys.version.split()[0]}, {args.tasks} tasks per round"
        )

        # A first round loads the script and yields the messages to push.
        time_queue_many(manager, args.tasks)
        messages = client.hvals(manager.keys.tasks)
        client.flushall()

        queue_many_rates = []
        lpush_rates = []
        for _ in range(args.rounds):
            queue_many_rates.append(time_queue_many(manager, args.tasks))
            client.flushall()
            lpush_rates.append(time_lpush(manager, messages))
            client.flushall()
        manager.stop()

    queue_many_rate = statistics.median(queue_many_rates)
    lpush_rate = statistics.median(lpush_rates)
    print(f"queue_many        {queue_many_rate:9.0f} tasks/s (median)")
    print(f"pipelined LPUSH   {lpush_rate:9.0f} tasks/s (median)")
    print(f"ratio             {queue_many_rate / lpush_rate:9.2f}")


if __name__ == "__main__":
    main()
