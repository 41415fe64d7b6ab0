"""Tasks with timeouts for the timeout tests; the queue comes from TIMEOUT_QUEUE."""

from __future__ import annotations

import os
import time

from tasker_redis import Config, TaskContext, task


class Resource:
    """A resource that records the process that created it."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def close(self) -> None:
        pass


@task(name="timeouts.spin", timeout=1.0)
def spin(ctx: TaskContext, resource: Resource) -> None:
    # Never looks at ctx.cancelled, so only killing the process stops it.
    while True:
        pass


@task(name="timeouts.cooperative", timeout=1.0)
def cooperative(ctx: TaskContext, resource: Resource) -> None:
    while not ctx.wait(0.01):
        pass
    ctx.raise_if_cancelled()


@task(name="timeouts.pid")
def pid(ctx: TaskContext, resource: Resource) -> int:
    return resource.pid


@task(name="timeouts.sleep")
def sleep(ctx: TaskContext, resource: Resource, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def config() -> Config:
    return Config(
        on_create=Resource,
        on_destroy=Resource.close,
        queue=os.environ.get("TIMEOUT_QUEUE", "timeouts"),
        block_timeout=0.2,
    )
