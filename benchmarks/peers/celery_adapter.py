"""celery: `celery worker` with Redis as broker and result backend.

Concurrency 1 uses the solo pool, which runs tasks in the worker process
itself; concurrency 8 uses the threads pool. The default prefork pool would
run tasks in child processes. Gossip, mingle and heartbeat are off, as is
usual with a Redis broker; they only exchange events between workers.
celery has no batch enqueue: group() sends one message per task.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult

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
app = Celery("peers", broker=redis_url(), backend=redis_url())
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(name="peers.noop")
def noop() -> None:
    return None


@app.task(name="peers.echo")
def echo(data: str) -> str:
    return data


@app.task(name="peers.sleep")
def sleep() -> None:
    time.sleep(SLEEP_SECONDS)


TASKS = {NOOP: noop, PAYLOAD: echo, SLEEP: sleep}


class CeleryAdapter(Adapter):
    name = "celery"
    packages = ("celery", "kombu", "redis")
    settings = "--without-gossip --without-mingle --without-heartbeat"

    def setups(self) -> list[Setup]:
        return [Setup(1, "solo pool"), Setup(8, "threads pool, 8 threads")]

    def worker_command(self, setup: Setup) -> list[str]:
        pool = ["--pool", "solo"] if setup.concurrency == 1 else ["--pool", "threads"]
        return [
            console_script("celery"),
            "--app",
            "benchmarks.peers.celery_adapter",
            "worker",
            *pool,
            "--concurrency",
            str(setup.concurrency),
            "--queues",
            QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def open(self, url: str) -> None:
        # The module-level app already points at url.
        pass

    def close(self) -> None:
        app.close()

    def submit(self, workload: str) -> AsyncResult:
        return TASKS[workload].delay(*task_arguments(workload))

    def result(self, handle: AsyncResult, timeout: float) -> Any:
        # The Redis backend waits on pub/sub, subscribed when the task was sent.
        try:
            return handle.get(timeout=timeout)
        except CeleryTimeoutError:
            raise TimeoutError(
                f"no result for celery task {handle.id} in {timeout:.1f} s"
            ) from None
        finally:
            handle.forget()
