"""Tasks of known durations and a Config for the metrics and Prometheus tests.

The Config's metrics collector pushes every TaskEvent as JSON to the Redis
list EVENTS, so a test can read what the worker processes reported. The
resource is a Redis client that held tasks wait on. Workers read their
settings from environment variables:

    METRICS_QUEUE: queue name, "metrics" by default.
    METRICS_LEASE_TIMEOUT: lease_timeout in seconds, 10 by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import Any

import redis

from tasker_redis import Config, TaskContext, TaskEvent, task
from tasker_redis.config import default_redis_url

# List of one JSON TaskEvent per finished run, pushed by EventList.
EVENTS = "metrics:events"
# Seconds a held task waits for its gate before it fails, so that a broken
# test cannot leave a worker blocked for the whole pytest timeout.
GATE_TIMEOUT = 60


class ResourceBroken(Exception):
    """Raised by a task to make check_health judge its resource unhealthy."""


class EventList:
    """A MetricsCollector that pushes each TaskEvent as JSON to the list EVENTS.

    Each process connects on its first event, so a collector built in the
    supervisor does not share a socket with the worker processes it forks.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[int, redis.Redis] = {}
        self._lock = threading.Lock()

    def record(self, event: TaskEvent) -> None:
        with self._lock:
            client = self._clients.get(os.getpid())
            if client is None:
                client = redis.Redis.from_url(self.url, socket_timeout=120)
                self._clients[os.getpid()] = client
        client.rpush(EVENTS, json.dumps(dataclasses.asdict(event)))


def read_events(client: redis.Redis) -> list[dict[str, Any]]:
    """Return every event pushed so far, oldest first."""
    return [json.loads(item) for item in client.lrange(EVENTS, 0, -1)]


def gate_key(label: str) -> str:
    """Return the key of the list that hold(label) waits on."""
    return f"metrics:gate:{label}"


def create_resource() -> redis.Redis:
    return redis.Redis.from_url(default_redis_url(), socket_timeout=120)


def destroy_resource(resource: redis.Redis) -> None:
    resource.close()


def check_health(error: BaseException) -> bool:
    return not isinstance(error, ResourceBroken)


def build_config(**settings: Any) -> Config:
    """Return the Config of the metrics test queue with the given settings.

    The collector pushes to the server at settings["redis_url"], else at
    $TASKER_REDIS_URL. block_timeout defaults to 0.2 s so that idle workers
    stop quickly.
    """
    settings.setdefault("redis_url", default_redis_url())
    settings.setdefault("queue", "metrics")
    settings.setdefault("block_timeout", 0.2)
    settings.setdefault("metrics_collector", EventList(settings["redis_url"]))
    return Config(
        on_create=create_resource,
        on_destroy=destroy_resource,
        check_health=check_health,
        **settings,
    )


def config() -> Config:
    """Return the Config of `tasker worker apps.metrics_tasks:config`, from env."""
    settings: dict[str, Any] = {}
    if "METRICS_QUEUE" in os.environ:
        settings["queue"] = os.environ["METRICS_QUEUE"]
    if "METRICS_LEASE_TIMEOUT" in os.environ:
        settings["lease_timeout"] = float(os.environ["METRICS_LEASE_TIMEOUT"])
    return build_config(**settings)


@task(name="metrics.sleep")
def sleep_ms(context: TaskContext, resource: redis.Redis, ms: int) -> int:
    """Sleep ms milliseconds and return ms."""
    time.sleep(ms / 1000)
    return ms


@task(name="metrics.fail")
def fail_ms(context: TaskContext, resource: redis.Redis, ms: int) -> None:
    """Sleep ms milliseconds, then raise ValueError."""
    time.sleep(ms / 1000)
    raise ValueError(f"failed after {ms} ms on purpose")


@task(name="metrics.flaky")
def flaky_ms(context: TaskContext, resource: redis.Redis, ms: int) -> int:
    """Raise ResourceBroken at once on attempt 1, else sleep ms and return ms."""
    if context.attempt == 1:
        raise ResourceBroken("resource broken on purpose")
    time.sleep(ms / 1000)
    return ms


@task(name="metrics.hold")
def hold(context: TaskContext, resource: redis.Redis, label: str) -> str:
    """Wait until a test pushes to gate_key(label), then return label."""
    if resource.blpop([gate_key(label)], timeout=GATE_TIMEOUT) is None:
        raise TimeoutError(f"gate {label!r} was not opened within {GATE_TIMEOUT} s")
    return label
