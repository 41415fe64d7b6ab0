"""Slow tasks for the burst scaling tests; settings come from SCALING_* variables."""

from __future__ import annotations

import os
import time

from tasker_redis import Config, TaskContext, task


class Resource:
    """A resource with nothing to open or close."""

    def close(self) -> None:
        pass


@task(name="scaling.slow")
def slow(ctx: TaskContext, resource: Resource, seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def config() -> Config:
    return Config(
        on_create=Resource,
        on_destroy=Resource.close,
        queue=os.environ.get("SCALING_QUEUE", "scaling"),
        worker_count=1,
        max_worker_count=int(os.environ.get("SCALING_MAX_WORKERS", "3")),
        burst_interval=float(os.environ.get("SCALING_INTERVAL", "0.3")),
        block_timeout=0.2,
    )
