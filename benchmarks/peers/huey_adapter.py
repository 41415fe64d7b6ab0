"""huey: `huey_consumer` with RedisHuey and thread workers.

huey has no batch enqueue (Task.map() enqueues one task at a time). The
storage uses notify_result=True, so a waiting client blocks on BLPOP rather
than polling for the result with backoff from 50 ms, and store_none=True,
since huey stores no result for a task that returns None by default.
"""

from __future__ import annotations

import time
from typing import Any

from huey import RedisHuey
from huey.api import Result
from huey.exceptions import ResultTimeout

from benchmarks.peers.base import (
    NOOP,
    PAYLOAD,
    QUEUE,
    SLEEP,
    SLEEP_SECONDS,
    Adapter,
    Setup,
    console_script,
    redis_url,
    task_arguments,
)

# The harness sets the URL in its own environment before it imports adapters.
huey = RedisHuey(QUEUE, url=redis_url(), notify_result=True, store_none=True)


@huey.task(name="peers.noop")
def noop() -> None:
    return None


@huey.task(name="peers.echo")
def echo(data: str) -> str:
    return data


@huey.task(name="peers.sleep")
def sleep() -> None:
    time.sleep(SLEEP_SECONDS)


TASKS = {NOOP: noop, PAYLOAD: echo, SLEEP: sleep}


class HueyAdapter(Adapter):
    name = "huey"
    packages = ("huey", "redis")
    settings = "RedisHuey(notify_result=True, store_none=True)"

    def setups(self) -> list[Setup]:
        return [Setup(1, "1 thread"), Setup(8, "8 threads")]

    def worker_command(self, setup: Setup) -> list[str]:
        return [
            console_script("huey_consumer"),
            "benchmarks.peers.huey_adapter.huey",
            "--workers",
            str(setup.concurrency),
            "--worker-type",
            "thread",
        ]

    def open(self, url: str) -> None:
        # The module-level huey already points at url.
        pass

    def submit(self, workload: str) -> Result:
        result: Result = TASKS[workload](*task_arguments(workload))
        return result

    def result(self, handle: Result, timeout: float) -> Any:
        try:
            return handle.get(blocking=True, timeout=timeout)
        except ResultTimeout:
            raise TimeoutError(
                f"no result for huey task {handle.id} in {timeout:.1f} s"
            ) from None
