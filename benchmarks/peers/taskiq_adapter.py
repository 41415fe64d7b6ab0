"""taskiq: `taskiq worker` with taskiq-redis's list and stream brokers.

Both brokers store results with RedisAsyncResultBackend. `--workers 1`
runs one worker process, which the command's own parent process
supervises, and `--max-async-tasks` sets the concurrency. taskiq has no
batch enqueue, and a client polls for each result: every 2 ms here
instead of the default 0.2 s.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from taskiq import AsyncBroker, AsyncTaskiqTask
from taskiq.exceptions import TaskiqResultTimeoutError
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

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
)


async def noop() -> None:
    return None


async def echo(data: str) -> str:
    return data


async def sleep() -> None:
    await asyncio.sleep(SLEEP_SECONDS)


def _broker(broker: AsyncBroker) -> AsyncBroker:
    # The harness sets the URL in its own environment before it imports adapters.
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(redis_url())
    return broker.with_result_backend(backend)


list_broker = _broker(ListQueueBroker(redis_url(), queue_name=f"{QUEUE}:taskiq-list"))
stream_broker = _broker(
    RedisStreamBroker(redis_url(), queue_name=f"{QUEUE}:taskiq-stream")
)
TASKS: dict[AsyncBroker, dict[str, Any]] = {
    broker: {
        NOOP: broker.register_task(noop, task_name="peers.noop"),
        PAYLOAD: broker.register_task(echo, task_name="peers.echo"),
        SLEEP: broker.register_task(sleep, task_name="peers.sleep"),
    }
    for broker in (list_broker, stream_broker)
}


class TaskiqListAdapter(AsyncAdapter):
    name = "taskiq ListQueueBroker"
    packages = ("taskiq", "taskiq-redis", "redis")
    settings = "wait_result check_interval 2 ms (default 0.2 s)"
    broker: ClassVar[AsyncBroker] = list_broker
    broker_spec = "benchmarks.peers.taskiq_adapter:list_broker"

    def setups(self) -> list[Setup]:
        return [
            Setup(1, "asyncio, --max-async-tasks 1"),
            Setup(8, "asyncio, --max-async-tasks 8"),
        ]

    def worker_command(self, setup: Setup) -> list[str]:
        return [
            console_script("taskiq"),
            "worker",
            self.broker_spec,
            "--workers",
            "1",
            "--max-async-tasks",
            str(setup.concurrency),
        ]

    async def open_async(self, url: str) -> None:
        await self.broker.startup()

    async def close_async(self) -> None:
        await self.broker.shutdown()

    async def submit_async(self, workload: str) -> AsyncTaskiqTask[Any]:
        return await TASKS[self.broker][workload].kiq(*task_arguments(workload))

    async def result_async(self, handle: AsyncTaskiqTask[Any], timeout: float) -> Any:
        try:
            result = await handle.wait_result(
                check_interval=POLL_INTERVAL, timeout=timeout
            )
        except TaskiqResultTimeoutError:
            raise TimeoutError(
                f"no result for taskiq task {handle.task_id} in {timeout:.1f} s"
            ) from None
        result.raise_for_error()
        return result.return_value


class TaskiqStreamAdapter(TaskiqListAdapter):
    name = "taskiq RedisStreamBroker"
    broker = stream_broker
    broker_spec = "benchmarks.peers.taskiq_adapter:stream_broker"
