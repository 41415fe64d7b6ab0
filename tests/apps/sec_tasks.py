"""Tasks and a Config for the security tests in tests/e2e/test_security.py.

Workers take the Redis URL from TASKER_REDIS_URL, as `tasker worker` does, the
queue name from SEC_QUEUE and the lease timeout in seconds from
SEC_LEASE_TIMEOUT. The tasks and resources use no Redis client of their own,
so a worker reaches Redis only as the user in its URL.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasker_redis import Config, TaskContext, task

QUEUE_ENV = "SEC_QUEUE"
LEASE_TIMEOUT_ENV = "SEC_LEASE_TIMEOUT"
DEFAULT_QUEUE = "secure"


class ResourceBroken(Exception):
    """Raised by a task to make check_health judge its resource unhealthy."""


def build_config(**settings: Any) -> Config:
    """Return the Config of the test queue, with block_timeout 0.2 s unless given."""
    settings.setdefault("block_timeout", 0.2)
    return Config(
        on_create=create_resource,
        on_destroy=destroy_resource,
        check_health=check_health,
        **settings,
    )


def config() -> Config:
    """Return the Config for `tasker worker apps.sec_tasks:config`."""
    settings: dict[str, Any] = {"queue": os.environ.get(QUEUE_ENV, DEFAULT_QUEUE)}
    if LEASE_TIMEOUT_ENV in os.environ:
        settings["lease_timeout"] = float(os.environ[LEASE_TIMEOUT_ENV])
    return build_config(**settings)


def create_resource() -> dict[str, int]:
    return {"pid": os.getpid()}


def destroy_resource(resource: dict[str, int]) -> None:
    resource.clear()


def check_health(error: BaseException) -> bool:
    return not isinstance(error, ResourceBroken)


@task
def add(context: TaskContext, resource: dict[str, int], a: int, b: int) -> int:
    """Return a + b."""
    return a + b


@task
def touch(
    context: TaskContext, resource: dict[str, int], path: str, *values: Any
) -> list[str]:
    """Create an empty file at path, a side effect that a test can see.

    Returns the type names of the extra values, as the task received them.
    """
    Path(path).touch()
    return [type(value).__qualname__ for value in values]


@task
def fail_once(context: TaskContext, resource: dict[str, int], path: str) -> int:
    """Raise ResourceBroken on the first run, which creates path.

    Returns the attempt on the next run.
    """
    marker = Path(path)
    if not marker.exists():
        marker.touch()
        raise ResourceBroken(f"first run of task {context.task_id}")
    return context.attempt


@task
def exit_once(context: TaskContext, resource: dict[str, int], path: str) -> int:
    """End the worker process on the first run, which creates path.

    Returns the attempt on the next run.
    """
    marker = Path(path)
    if not marker.exists():
        marker.touch()
        os._exit(1)
    return context.attempt
