"""rq: `rq worker` with the default Worker or with SimpleWorker.

The default Worker forks a child process for every job; SimpleWorker runs
jobs in the worker process. An rq worker runs one job at a time, so
concurrency inside one process is not supported (`rq worker-pool` starts
several processes).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import redis
from rq import Queue
from rq.job import Job
from rq.results import Result

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


def noop() -> None:
    return None


def echo(data: str) -> str:
    return data


def sleep() -> None:
    time.sleep(SLEEP_SECONDS)


TASKS = {NOOP: noop, PAYLOAD: echo, SLEEP: sleep}


class RqAdapter(Adapter):
    name = "rq Worker"
    packages = ("rq", "redis")
    batching = "Queue.enqueue_many, one pipeline"
    worker_class = "rq.worker.Worker"
    # Forking a process per job ran about 40 jobs/s on a 2-CPU machine, so
    # 5,000 tasks would take two minutes per workload and the whole run
    # would exceed ten minutes.
    max_tasks: ClassVar[int | None] = 1000

    _queue: Queue

    def setups(self) -> list[Setup]:
        return [
            Setup(1, "1 process, fork per job"),
            Setup(8, "1 process", skip_reason="an rq worker runs one job at a time"),
        ]

    def worker_command(self, setup: Setup) -> list[str]:
        return [
            console_script("rq"),
            "worker",
            "--url",
            redis_url(),
            "--worker-class",
            self.worker_class,
            QUEUE,
        ]

    def open(self, url: str) -> None:
        self._queue = Queue(QUEUE, connection=redis.Redis.from_url(url))

    def close(self) -> None:
        self._queue.connection.close()

    def submit(self, workload: str) -> Job:
        return self._queue.enqueue(TASKS[workload], *task_arguments(workload))

    def enqueue(self, workload: str, count: int) -> list[Job]:
        arguments = task_arguments(workload)
        data = [Queue.prepare_data(TASKS[workload], arguments) for _ in range(count)]
        return self._queue.enqueue_many(data)

    def result(self, handle: Job, timeout: float) -> Any:
        # Blocks with XREAD on the job's results stream; rq takes whole seconds.
        result = handle.latest_result(timeout=max(1, round(timeout)))
        if result is None:
            raise TimeoutError(
                f"no result for rq job {handle.id} within {timeout:.1f} s"
            )
        if result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"rq job {handle.id} failed: {result.exc_string}")
        return result.return_value


class RqSimpleAdapter(RqAdapter):
    name = "rq SimpleWorker"
    worker_class = "rq.worker.SimpleWorker"
    max_tasks = None

    def setups(self) -> list[Setup]:
        return [
            Setup(1, "1 process"),
            Setup(8, "1 process", skip_reason="an rq worker runs one job at a time"),
        ]
