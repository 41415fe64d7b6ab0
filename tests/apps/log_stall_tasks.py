"""A queue whose worker's log handler stalls once, on the first task line.

With STALL_SECONDS set, importing this module in a worker process adds a
handler to the worker's logger that blocks that long on the first per-task
INFO line, as a log file on a stalled disk would.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from tasker_redis import Config, TaskContext, task

STALL_SECONDS_ENV = "STALL_SECONDS"
QUEUE = "log-stall"
# Short, so that a task held unseen through the stall would lose its lease.
LEASE_TIMEOUT = 1.0


class StallOnce(logging.Handler):
    """Blocks for seconds on the first task line it handles."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self._stalled = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("task ") and not self._stalled.is_set():
            self._stalled.set()
            time.sleep(self.seconds)


if STALL_SECONDS_ENV in os.environ:
    logging.getLogger("tasker_redis.worker").addHandler(
        StallOnce(float(os.environ[STALL_SECONDS_ENV]))
    )


def build_config(redis_url: str) -> Config:
    return Config(
        on_create=dict,
        on_destroy=lambda resource: None,
        redis_url=redis_url,
        queue=QUEUE,
        lease_timeout=LEASE_TIMEOUT,
    )


def config() -> Config:
    return build_config(os.environ["TASKER_REDIS_URL"])


@task(name="log-stall.echo")
def echo(context: TaskContext, resource: dict[str, Any], value: Any) -> Any:
    return value
