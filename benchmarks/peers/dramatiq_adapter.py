"""dramatiq: the `dramatiq` worker command with the Redis broker and results backend.

`--processes 1 --threads N` runs one worker process with N threads; the
command's own parent process supervises it. dramatiq has no batch enqueue.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from dramatiq.results import Results, ResultTimeout
from dramatiq.results.backends.redis import RedisBackend

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
broker = RedisBroker(url=redis_url())
broker.add_middleware(Results(backend=RedisBackend(url=redis_url())))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def noop() -> None:
    return None


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def echo(data: str) -> str:
    return data


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def sleep() -> None:
    time.sleep(SLEEP_SECONDS)


TASKS: dict[str, Any] = {NOOP: noop, PAYLOAD: echo, SLEEP: sleep}


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    packages = ("dramatiq", "redis")

    def setups(self) -> list[Setup]:
        return [Setup(1, "1 thread"), Setup(8, "8 threads")]

    def worker_command(self, setup: Setup) -> list[str]:
        return [
            console_script("dramatiq"),
            "benchmarks.peers.dramatiq_adapter",
            "--processes",
            "1",
            "--threads",
            str(setup.concurrency),
        ]

    def open(self, url: str) -> None:
        # The module-level broker already points at url.
        pass

    def submit(self, workload: str) -> Message[Any]:
        return TASKS[workload].send(*task_arguments(workload))

    def result(self, handle: Message[Any], timeout: float) -> Any:
        # The Redis backend blocks with BRPOPLPUSH, in whole seconds.
        try:
            return handle.get_result(block=True, timeout=max(1000, int(timeout * 1000)))
        except ResultTimeout:
            raise TimeoutError(
                f"no result for dramatiq message {handle.message_id} in {timeout:.1f} s"
            ) from None
