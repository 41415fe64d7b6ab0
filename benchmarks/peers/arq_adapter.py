"""arq: the `arq` worker command, with max_jobs as the concurrency.

arq has no batch enqueue, and both its worker and Job.result() poll Redis:
they poll every 2 ms here instead of the default 0.5 s.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, ResultNotFound

from benchmarks.peers.base import (
    NOOP,
    PAYLOAD,
    POLL_INTERVAL,
    QUEUE,
    SLEEP,
    SLEEP_SECONDS,
    AsyncAdapter,
    Setup,
    console_script,
    redis_url,
    task_arguments,
    worker_concurrency,
)

QUEUE_NAME = f"{QUEUE}:arq"


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def echo(ctx: dict[str, Any], data: str) -> str:
    return data


async def sleep(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(SLEEP_SECONDS)


TASKS = {NOOP: "noop", PAYLOAD: "echo", SLEEP: "sleep"}


class WorkerSettings:
    """The settings that `arq benchmarks.peers.arq_adapter.WorkerSettings` loads.

    The harness sets the URL in its own environment before it imports the
    adapters, so importing this module works in both processes.
    """

    functions: ClassVar[list[Any]] = [noop, echo, sleep]
    queue_name = QUEUE_NAME
    redis_settings = RedisSettings.from_dsn(redis_url())
    max_jobs = worker_concurrency()
    poll_delay = POLL_INTERVAL


class ArqAdapter(AsyncAdapter):
    name = "arq"
    packages = ("arq", "redis")
    settings = "worker poll_delay and Job.result poll_delay 2 ms (default 0.5 s)"

    _pool: ArqRedis

    def setups(self) -> list[Setup]:
        return [Setup(1, "asyncio, max_jobs=1"), Setup(8, "asyncio, max_jobs=8")]

    def worker_command(self, setup: Setup) -> list[str]:
        return [console_script("arq"), "benchmarks.peers.arq_adapter.WorkerSettings"]

    async def open_async(self, url: str) -> None:
        self._pool = await create_pool(RedisSettings.from_dsn(url))

    async def close_async(self) -> None:
        await self._pool.aclose()

    async def submit_async(self, workload: str) -> Job:
        job = await self._pool.enqueue_job(
            TASKS[workload], *task_arguments(workload), _queue_name=QUEUE_NAME
        )
        assert job is not None
        return job

    async def result_async(self, handle: Job, timeout: float) -> Any:
        try:
            return await handle.result(timeout=timeout, poll_delay=POLL_INTERVAL)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"no result for arq job {handle.job_id} within {timeout:.1f} s"
            ) from None
        except ResultNotFound:
            # arq 0.25 reads the result and the queue entry in two separate
            # commands, so a job that finishes between them looks lost. arq
            # 0.28 reads both in one transaction but requires redis-py < 6,
            # which conflicts with celery 5.7 and taskiq-redis 1.2.4.
            info = await handle.result_info()
            if info is None:
                raise
            if not info.success:
                message = f"arq job {handle.job_id} failed: {info.result}"
                raise RuntimeError(message) from None
            return info.result
