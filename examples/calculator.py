"""Multiply numbers on worker processes that each own a Calculator resource.

A port of the QueueTask example of the Go library tasker
(github.com/asaidimu/tasker, docs/usage/core-operations). It starts
`tasker worker examples.calculator:config` with two worker processes, queues
one multiplication with queue_task and blocks on its result, queues a few more
with queue_task_async and waits on their futures, then stops the workers with
SIGTERM.

Run from the repository root:

    python -m examples.calculator

It uses the Redis server at $TASKER_REDIS_URL, or starts a temporary local one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from examples.support import Workers, redis_server
from tasker_redis import Config, TaskContext, TaskManager, task
from tasker_redis.config import REDIS_URL_ENV

logger = logging.getLogger(__name__)

# Pairs multiplied with queue_task_async.
ASYNC_PAIRS = [(2, 3), (7, 6), (12, 12), (123456789, 987654321)]


class Calculator:
    """The per-worker resource, made once per worker thread like a costly client."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.operations = 0

    def multiply(self, a: int, b: int) -> int:
        self.operations += 1
        return a * b

    def close(self) -> None:
        logger.info(
            "calculator of process %d closed (operations: %d)",
            self.pid,
            self.operations,
        )


# An explicit name, because this module is "__main__" when run as a script but
# "examples.calculator" in the workers that import it.
@task(name="calc.multiply")
def multiply(ctx: TaskContext, calculator: Calculator, a: int, b: int) -> int:
    """Return a * b, computed with the worker's calculator."""
    logger.info("worker %s multiplying %d by %d", ctx.worker_id, a, b)
    return calculator.multiply(a, b)


config = Config(
    on_create=Calculator,
    on_destroy=Calculator.close,
    worker_count=2,
    queue="calculator",
)


def main() -> None:
    url = os.environ.get(REDIS_URL_ENV)
    with (
        redis_server(url) as redis_url,
        Workers(
            "examples.calculator:config",
            count=config.worker_count,
            env={REDIS_URL_ENV: redis_url},
        ) as workers,
        TaskManager(dataclasses.replace(config, redis_url=redis_url)) as manager,
    ):
        workers.wait_until_running(manager)

        started = time.perf_counter()
        product = manager.queue_task(multiply, 10, 25)
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"queue_task: 10 * 25 = {product} ({elapsed_ms:.1f} ms)")

        futures = [manager.queue_task_async(multiply, a, b) for a, b in ASYNC_PAIRS]
        for (a, b), future in zip(ASYNC_PAIRS, futures, strict=True):
            print(f"queue_task_async: {a} * {b} = {future.result(timeout=30)}")


if __name__ == "__main__":
    main()
