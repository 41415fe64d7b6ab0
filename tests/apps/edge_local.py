"""Tasks for run_task tests, and resource hooks that record every call.

run_task passes arguments to the function without encoding them, so these
tasks take threading.Event objects and lists to report what they saw.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from tasker_redis import TaskContext, task

# Seconds a held task waits for its release before it fails, so that a broken
# test cannot block forever.
RELEASE_TIMEOUT = 30


@dataclass(frozen=True)
class Resource:
    """A resource with a serial number, unique within one ResourceLog."""

    serial: int


CREATE_FAILURE = "on_create failed on purpose"


@dataclass
class ResourceLog:
    """on_create and on_destroy hooks that record the resources they handle.

    Attributes:
        created: Resources that create returned, in order.
        destroyed: Resources that destroy received, in order.
        failing_creates: Calls of create that raise RuntimeError before one
            succeeds again.
    """

    created: list[Resource] = field(default_factory=list)
    destroyed: list[Resource] = field(default_factory=list)
    failing_creates: int = 0
    _serials: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self) -> Resource:
        """Create a new resource and record it, or raise while failing_creates > 0."""
        with self._lock:
            if self.failing_creates > 0:
                self.failing_creates -= 1
                raise RuntimeError(CREATE_FAILURE)
            resource = Resource(next(self._serials))
            self.created.append(resource)
        return resource

    def destroy(self, resource: Resource) -> None:
        """Record the destruction of a resource."""
        with self._lock:
            self.destroyed.append(resource)


class UnhealthyError(ConnectionError):
    """A ConnectionError that tasks raise to mark their resource as broken."""


def reject_connection_errors(error: BaseException) -> bool:
    """Judge a resource unhealthy after a ConnectionError, healthy otherwise."""
    return not isinstance(error, ConnectionError)


@task
def where(ctx: TaskContext, resource: Resource) -> tuple[int, Resource]:
    """Return the id of the running process and the resource the task got."""
    return os.getpid(), resource


@task
def hold(
    ctx: TaskContext,
    resource: Resource,
    started: threading.Event,
    release: threading.Event,
) -> Resource:
    """Set started, wait for release, then return the resource.

    Raises:
        TimeoutError: release was not set within 30 s.
    """
    started.set()
    if not release.wait(RELEASE_TIMEOUT):
        raise TimeoutError(f"timed out after {RELEASE_TIMEOUT} s waiting for release")
    return resource


@task
def fail_unhealthy(ctx: TaskContext, resource: Resource, seen: list[Any]) -> None:
    """Record the attempt and the resource in seen, then raise UnhealthyError."""
    seen.append((ctx.attempt, resource))
    raise UnhealthyError(f"resource {resource.serial} is broken")


@task
def fail_first_attempt(ctx: TaskContext, resource: Resource, seen: list[Any]) -> str:
    """Raise UnhealthyError on the first attempt and return "done" after it."""
    seen.append((ctx.attempt, resource))
    if ctx.attempt == 1:
        raise UnhealthyError(f"resource {resource.serial} is broken")
    return "done"


@task
def fail_healthy(ctx: TaskContext, resource: Resource, message: str) -> None:
    """Raise ValueError(message), a failure that leaves the resource healthy."""
    raise ValueError(message)
