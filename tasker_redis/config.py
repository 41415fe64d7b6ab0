"""The Config dataclass: resource hooks, Redis address, queue name and limits."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tasker_redis.errors import ConfigError

if TYPE_CHECKING:
    from tasker_redis.metrics import MetricsCollector

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "TASKER_REDIS_URL"
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
URL_SCHEMES = ("redis", "rediss", "unix")


def default_redis_url() -> str:
    """Return $TASKER_REDIS_URL if it is set and not empty, else the local default."""
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


def mask_url(url: str) -> str:
    """Return the URL with its password replaced by "***", for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None and "password=" not in parts.query.lower():
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        # Keep the host part as written, with IPv6 brackets and port.
        netloc = f"{user}:***@{netloc.rpartition('@')[2]}"
    # redis-py also reads a password from the query string.
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Config:
    """Settings shared by producers, workers and run_task for one queue.

    Workers and producers of one queue should use the same values for
    `queue`, `redis_url`, `lease_timeout` and `max_crashes`.

    Args:
        on_create: Creates one resource. Each worker thread calls it once at
            start and again after an unhealthy failure; run_task calls it to
            fill its pool.
        on_destroy: Releases a resource made by on_create.
        worker_count: Worker processes that one `tasker worker` starts and
            keeps running.
        worker_threads: Threads in each worker process. Each thread creates
            its own resource and runs one task at a time, so a process runs
            up to worker_threads tasks at once. Threads suit tasks that wait
            on I/O; CPU-bound tasks need more processes instead. A task that
            kills its process, or runs past its timeout, also interrupts the
            tasks of the other threads.
        max_worker_count: Upper bound of worker processes when the backlog
            grows; the extra ones are burst workers. None means worker_count,
            which turns burst scaling off.
        burst_interval: Seconds between looks at the queue that add or
            retire burst workers. 0 turns burst scaling off.
        redis_url: Address of the Redis server, `redis://`, `rediss://` (TLS)
            or `unix://`. Defaults to $TASKER_REDIS_URL, then
            redis://127.0.0.1:6379/0.
        queue: Name that prefixes every Redis key of this queue.
        max_retries: Times a task is queued again at high priority after it
            failed and check_health judged the resource unhealthy.
        check_health: Receives the exception a task raised and returns False
            if the resource that ran it is broken. None treats every resource
            as healthy, so failures are never retried.
        resource_pool_size: Resources that run_task keeps between calls.
            None means worker_count.
        result_ttl: Seconds a result stays readable in Redis.
        lease_timeout: Seconds a claimed task stays reserved for a worker
            without a heartbeat. After it, another worker runs the task again.
        max_crashes: Times a task may be delivered again after the worker
            running it died. One more crash moves it to the dead-letter list.
        block_timeout: Seconds one blocking Redis call waits before the caller
            checks for shutdown and reconnects if needed.
        socket_timeout: Seconds a Redis socket read may take. It must exceed
            block_timeout, since blocking calls wait on the same socket.
        max_payload_size: Bytes an encoded task or result may have.
        metrics_collector: Receives a TaskEvent after every task run, in the
            worker process or the run_task caller, to send metrics elsewhere.
            Metrics in Redis (TaskManager.metrics) do not depend on it.
    """

    on_create: Callable[[], Any]
    on_destroy: Callable[[Any], None]
    worker_count: int = 1
    worker_threads: int = 1
    max_worker_count: int | None = None
    burst_interval: float = 5.0
    redis_url: str = field(default_factory=default_redis_url, repr=False)
    queue: str = "default"
    max_retries: int = 3
    check_health: Callable[[BaseException], bool] | None = None
    resource_pool_size: int | None = None
    result_ttl: float = 86400.0
    lease_timeout: float = 10.0
    max_crashes: int = 3
    block_timeout: float = 1.0
    socket_timeout: float = 10.0
    max_payload_size: int = 64 * 1024 * 1024
    metrics_collector: MetricsCollector | None = None

    def __repr__(self) -> str:
        # The generated repr, with the URL's password masked.
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__dataclass_fields__
            if name != "redis_url"
        )
        return f"Config(redis_url={self.masked_redis_url!r}, {fields})"

    def __post_init__(self) -> None:
        self._check_hooks()
        self._check_counts()
        self._check_durations()
        self._check_names()

    @property
    def pool_size(self) -> int:
        """Resources that run_task keeps: resource_pool_size or worker_count."""
        if self.resource_pool_size is None:
            return self.worker_count
        return self.resource_pool_size

    @property
    def burst_enabled(self) -> bool:
        """True if `tasker worker` may run more than worker_count processes."""
        return self.burst_interval > 0 and self.max_workers > self.worker_count

    @property
    def max_workers(self) -> int:
        """Most worker processes one `tasker worker` runs: max_worker_count or
        worker_count."""
        if self.max_worker_count is None:
            return self.worker_count
        return self.max_worker_count

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats that extend the leases of running tasks."""
        return self.lease_timeout / 3

    @property
    def masked_redis_url(self) -> str:
        """The Redis URL with its password masked."""
        return mask_url(self.redis_url)

    def _check_hooks(self) -> None:
        for name in ("on_create", "on_destroy"):
            if not callable(getattr(self, name)):
                value = getattr(self, name)
                raise ConfigError(f"{name} must be callable, got {value!r}")
        if self.check_health is not None and not callable(self.check_health):
            raise ConfigError(
                f"check_health must be callable or None, got {self.check_health!r}"
            )

    def _check_counts(self) -> None:
        _require_int("worker_count", self.worker_count, minimum=1)
        _require_int("worker_threads", self.worker_threads, minimum=1)
        _require_int("max_retries", self.max_retries, minimum=0)
        _require_int("max_crashes", self.max_crashes, minimum=0)
        _require_int("max_payload_size", self.max_payload_size, minimum=1)
        if self.resource_pool_size is not None:
            _require_int("resource_pool_size", self.resource_pool_size, minimum=0)
        if self.max_worker_count is not None:
            _require_int(
                "max_worker_count", self.max_worker_count, minimum=self.worker_count
            )

    def _check_durations(self) -> None:
        for name in ("result_ttl", "lease_timeout", "block_timeout", "socket_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
            if not value > 0:
                raise ConfigError(f"{name} must be greater than 0, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.burst_interval, bool) or not isinstance(
            self.burst_interval, (int, float)
        ):
            raise ConfigError(
                "burst_interval must be a number of seconds, "
                f"got {self.burst_interval!r}"
            )
        if not 0 <= self.burst_interval < math.inf:
            raise ConfigError(
                "burst_interval must be 0 (off) or a finite number of seconds, "
                f"got {self.burst_interval!r}"
            )
        if self.result_ttl < 0.001:
            raise ConfigError(
                f"result_ttl must be at least 0.001 seconds, got {self.result_ttl!r}"
            )
        if self.lease_timeout < 0.3:
            raise ConfigError(
                "lease_timeout must be at least 0.3 seconds, "
                f"got {self.lease_timeout!r}"
            )
        if self.socket_timeout <= self.block_timeout:
            raise ConfigError(
                f"socket_timeout ({self.socket_timeout!r}) must be greater than "
                f"block_timeout ({self.block_timeout!r}): blocking Redis calls "
                "would time out on the socket; raise socket_timeout or lower "
                "block_timeout"
            )

    def _check_names(self) -> None:
        if not isinstance(self.queue, str) or not QUEUE_NAME_PATTERN.fullmatch(
            self.queue
        ):
            raise ConfigError(
                f"invalid queue name {self.queue!r}: use 1 to 64 letters, digits, "
                "'.', '_' or '-'"
            )
        scheme = (
            urlsplit(self.redis_url).scheme if isinstance(self.redis_url, str) else ""
        )
        if scheme not in URL_SCHEMES:
            raise ConfigError(
                f"invalid redis_url {mask_url(str(self.redis_url))!r}: the scheme must "
                "be redis://, rediss:// or unix://, as in redis://127.0.0.1:6379/0"
            )


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value!r}")
