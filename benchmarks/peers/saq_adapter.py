"""saq: the `saq` worker command, with the worker's concurrency setting.

saq has no batch enqueue. A result is awaited with Job.refresh(until_complete),
which listens for the job's status on Redis pub/sub.
"""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Job, Queue, Status

from benchmarks.peers.base import (
    NOOP,
    PAYLOAD,
    PAYLOAD_VALUE,
    QUEUE,
    SLEEP,
    SLEEP_SECONDS,
    AsyncAdapter,
    Setup,
    console_script,
    redis_url,
    worker_concurrency,
)

# Seconds one Job.refresh call listens before it reads the job again. saq
# subscribes after reading the job and unsubscribes when no one listens, so
# it would miss a job that finishes in between. The adapter keeps one
# listener open for the client's lifetime, and this window bounds any miss.
LISTEN_WINDOW = 0.1


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def echo(ctx: dict[str, Any], *, data: str) -> str:
    return data


async def sleep(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(SLEEP_SECONDS)


TASKS = {NOOP: "noop", PAYLOAD: "echo", SLEEP: "sleep"}

# The settings that `saq benchmarks.peers.saq_adapter.settings` loads. The
# harness sets the URL in its own environment before it imports adapters.
settings = {
    "queue": Queue.from_url(redis_url(), name=QUEUE),
    "functions": [noop, echo, sleep],
    "concurrency": worker_concurrency(),
}


class SaqAdapter(AsyncAdapter):
    name = "saq"
    packages = ("saq", "redis")

    _queue: Queue
    _keep_subscribed: asyncio.Future[None]

    def setups(self) -> list[Setup]:
        return [Setup(1, "asyncio, concurrency=1"), Setup(8, "asyncio, concurrency=8")]

    def worker_command(self, setup: Setup) -> list[str]:
        return [console_script("saq"), "benchmarks.peers.saq_adapter.settings"]

    async def open_async(self, url: str) -> None:
        self._queue = Queue.from_url(url, name=QUEUE)
        await self._queue.connect()
        self._keep_subscribed = asyncio.ensure_future(
            self._queue.listen(["keep-subscribed"], lambda *_: False, timeout=None)
        )

    async def close_async(self) -> None:
        self._keep_subscribed.cancel()
        await asyncio.gather(self._keep_subscribed, return_exceptions=True)
        await self._queue.disconnect()

    async def submit_async(self, workload: str) -> Job:
        if workload == PAYLOAD:
            job = await self._queue.enqueue(TASKS[workload], data=PAYLOAD_VALUE)
        else:
            job = await self._queue.enqueue(TASKS[workload])
        assert job is not None
        return job

    async def result_async(self, handle: Job, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not handle.completed:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"no result for saq job {handle.id} in {timeout:.1f} s"
                )
            try:
                await handle.refresh(until_complete=LISTEN_WINDOW)
            except asyncio.TimeoutError:
                await handle.refresh()
        if handle.status != Status.COMPLETE:
            raise RuntimeError(
                f"saq job {handle.id} ended {handle.status}: {handle.error}"
            )
        return handle.result
