"""tasker-redis: `tasker worker` processes, queue_many and queue_task.

Concurrency 8 in one process is `tasker worker --threads 8`: one process of
eight threads, each with its own resource. The "8 processes" setup runs
`tasker worker --workers 8` for comparison.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from benchmarks.peers.base import (
    NOOP,
    PAYLOAD,
    QUEUE,
    SLEEP,
    SLEEP_SECONDS,
    Adapter,
    Setup,
    check_result,
    redis_url,
    task_arguments,
)
from tasker_redis import Config, Task, TaskContext, TaskFuture, TaskManager, task


class Resource:
    """The per-worker resource: nothing to open or close."""

    def close(self) -> None:
        pass


@task(name="peers.noop")
def noop(ctx: TaskContext, resource: Resource) -> None:
    return None


@task(name="peers.echo")
def echo(ctx: TaskContext, resource: Resource, data: str) -> str:
    return data


@task(name="peers.sleep")
def sleep(ctx: TaskContext, resource: Resource) -> None:
    time.sleep(SLEEP_SECONDS)


TASKS: dict[str, Task[Any]] = {NOOP: noop, PAYLOAD: echo, SLEEP: sleep}


def config() -> Config:
    """Return the Config that the worker command loads."""
    return Config(
        on_create=Resource,
        on_destroy=Resource.close,
        redis_url=redis_url(),
        queue=QUEUE,
    )


class TaskerAdapter(Adapter):
    name = "tasker-redis"
    packages = ("tasker-redis", "redis", "hiredis", "msgpack")
    batching = "queue_many, 500 per script call"

    _manager: TaskManager

    def setups(self) -> list[Setup]:
        return [
            Setup(1, "1 process"),
            Setup(8, "1 process, 8 threads (--threads 8)"),
            Setup(8, "8 processes (--workers 8)"),
        ]

    def worker_command(self, setup: Setup) -> list[str]:
        workers = 8 if setup.execution.startswith("8 processes") else 1
        threads = 8 if "8 threads" in setup.execution else 1
        return [
            sys.executable,
            "-m",
            "tasker_redis_cli",
            "worker",
            "benchmarks.peers.tasker_adapter:config",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ]

    def open(self, url: str) -> None:
        self._manager = TaskManager(config())

    def close(self) -> None:
        self._manager.kill()

    def submit(self, workload: str) -> TaskFuture:
        return self._manager.queue_task_async(
            TASKS[workload], *task_arguments(workload)
        )

    def result(self, handle: TaskFuture, timeout: float) -> Any:
        return handle.result(timeout)

    def enqueue(self, workload: str, count: int) -> list[TaskFuture]:
        arguments = [task_arguments(workload)] * count
        return self._manager.queue_many(TASKS[workload], arguments)

    def round_trips(self, workload: str, count: int, timeout: float) -> list[float]:
        # queue_task is the blocking call: it sends the task from the caller's
        # thread and waits on the task's result key. It takes no timeout, so
        # a timer kills the manager, which makes a waiting call raise.
        watchdog = threading.Timer(timeout, self._manager.kill)
        watchdog.start()
        samples = []
        arguments = task_arguments(workload)
        try:
            for _ in range(count):
                started = time.perf_counter()
                value = self._manager.queue_task(TASKS[workload], *arguments)
                samples.append(time.perf_counter() - started)
                check_result(workload, value)
        finally:
            watchdog.cancel()
        return samples
