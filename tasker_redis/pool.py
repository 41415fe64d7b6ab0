"""The resource pool behind run_task, and the resource health check."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def resource_is_healthy(
    check_health: Callable[[BaseException], bool] | None, error: BaseException
) -> bool:
    """Return check_health(error), treating a missing check as healthy.

    A check that raises counts as unhealthy: replacing a resource that might
    be fine costs less than reusing one that is broken.
    """
    if check_health is None:
        return True
    try:
        return bool(check_health(error))
    except Exception:
        logger.exception(
            "check_health raised while judging %s; treating the resource as unhealthy",
            type(error).__name__,
        )
        return False


def destroy_quietly(on_destroy: Callable[[Any], None], resource: Any) -> None:
    """Call on_destroy and log, rather than raise, what it raises."""
    try:
        on_destroy(resource)
    except Exception:
        logger.exception("on_destroy raised while destroying a resource")


@dataclass
class Lease:
    """A resource handed out by the pool.

    Attributes:
        resource: The object on_create returned.
        pooled: False for a temporary resource that is destroyed on return.
    """

    resource: Any
    pooled: bool
    healthy: bool = True


class ResourcePool:
    """Up to `size` resources reused by run_task calls in this process.

    Resources are created on first use, so a process that never calls
    run_task creates none. When all pooled resources are busy, a call gets a
    temporary resource that is destroyed after it.
    """

    def __init__(
        self,
        on_create: Callable[[], Any],
        on_destroy: Callable[[Any], None],
        size: int,
    ) -> None:
        self._on_create = on_create
        self._on_destroy = on_destroy
        self._size = size
        self._idle: list[Any] = []
        self._pooled = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def available(self) -> int:
        """Idle pooled resources, ready without calling on_create."""
        with self._lock:
            return len(self._idle)

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """Lend a resource for one call; mark `healthy = False` to replace it."""
        lease = self._acquire()
        try:
            yield lease
        finally:
            self._return(lease)

    def _acquire(self) -> Lease:
        with self._lock:
            if self._idle:
                return Lease(self._idle.pop(), pooled=True)
            pooled = not self._closed and self._pooled < self._size
            if pooled:
                self._pooled += 1
        try:
            return Lease(self._on_create(), pooled=pooled)
        except BaseException:
            if pooled:
                with self._lock:
                    self._pooled -= 1
            raise

    def _return(self, lease: Lease) -> None:
        if lease.pooled:
            with self._lock:
                keep = lease.healthy and not self._closed
                if keep:
                    self._idle.append(lease.resource)
                else:
                    self._pooled -= 1
            if keep:
                return
        destroy_quietly(self._on_destroy, lease.resource)

    def close(self) -> None:
        """Destroy idle resources; resources in use are destroyed when returned."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._pooled -= len(idle)
        for resource in idle:
            destroy_quietly(self._on_destroy, resource)
