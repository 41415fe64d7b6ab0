"""Tasks and a Config for edge-case tests that run real `tasker worker` processes.

The resource is a redis-py client of $EDGE_RESOURCE_URL, else of the Config's
Redis URL, so tasks can push to lists that a test blocks on. The client
connects on first use, so tasks that never touch it need no reachable server.

Environment variables that tune the Config:
    EDGE_QUEUE: queue name, "edge" by default.
    EDGE_WORKERS: worker_count, 1 by default.
    EDGE_REDIS_URL: redis_url, else $TASKER_REDIS_URL.
    EDGE_MAX_PAYLOAD: max_payload_size in bytes, 64 MiB by default.
    EDGE_BLOCK_TIMEOUT: block_timeout in seconds, 0.2 by default, so that an
        idle worker notices a stop request quickly.
    EDGE_FAIL_CREATE: "1" makes on_create raise.
    EDGE_FAIL_DESTROY: "1" makes on_destroy raise.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from tasker_redis import Config, TaskContext, task
from tasker_redis.config import default_redis_url

QUEUE = "edge"

# Seconds a blocking task waits for its release before it fails, so that a
# broken test cannot leave a worker blocked forever.
RELEASE_TIMEOUT = 30

CREATE_FAILURE = "on_create failed on purpose"
DESTROY_FAILURE = "on_destroy failed on purpose"

# An attribute that a `tasker worker` spec can name but that is not a Config.
NOT_A_CONFIG = 42


def create_client() -> redis.Redis:
    """Create the worker's resource, or raise if $EDGE_FAIL_CREATE is "1"."""
    if os.environ.get("EDGE_FAIL_CREATE") == "1":
        raise RuntimeError(CREATE_FAILURE)
    url = os.environ.get("EDGE_RESOURCE_URL") or os.environ.get("EDGE_REDIS_URL")
    return redis.Redis.from_url(url or default_redis_url(), socket_timeout=120)


def close_client(client: redis.Redis) -> None:
    """Close the worker's resource, then raise if $EDGE_FAIL_DESTROY is "1"."""
    client.close()
    if os.environ.get("EDGE_FAIL_DESTROY") == "1":
        raise RuntimeError(DESTROY_FAILURE)


def build_config(**overrides: Any) -> Config:
    """Build the Config from the environment, with overrides applied last."""
    settings: dict[str, Any] = {
        "on_create": create_client,
        "on_destroy": close_client,
        "queue": os.environ.get("EDGE_QUEUE", QUEUE),
        "worker_count": int(os.environ.get("EDGE_WORKERS", "1")),
        "redis_url": os.environ.get("EDGE_REDIS_URL") or default_redis_url(),
        "max_payload_size": int(os.environ.get("EDGE_MAX_PAYLOAD", str(64 << 20))),
        "block_timeout": float(os.environ.get("EDGE_BLOCK_TIMEOUT", "0.2")),
    }
    settings.update(overrides)
    return Config(**settings)


config = build_config()


@task
def echo(ctx: TaskContext, client: redis.Redis, value: Any) -> Any:
    """Return value unchanged."""
    return value


@task
def add(ctx: TaskContext, client: redis.Redis, a: int, b: int) -> int:
    """Return a + b."""
    return a + b


@task
def worker_pid(ctx: TaskContext, client: redis.Redis) -> int:
    """Return the process id of the worker that runs the task."""
    return os.getpid()


@task
def return_set(ctx: TaskContext, client: redis.Redis) -> set[int]:
    """Return a set, which msgpack cannot encode."""
    return {1, 2}


@task
def return_bytes(ctx: TaskContext, client: redis.Redis, size: int) -> bytes:
    """Return size bytes."""
    return b"x" * size


@task
def push(ctx: TaskContext, client: redis.Redis, key: str, value: str) -> str:
    """Append value to the Redis list key and return it."""
    client.rpush(key, value)
    return value


@task
def block_until_released(
    ctx: TaskContext, client: redis.Redis, started_key: str, release_key: str
) -> str:
    """Push the task id to started_key, then wait for an entry on release_key.

    Returns:
        The entry popped from release_key.

    Raises:
        TimeoutError: Nothing arrived on release_key within 30 s.
    """
    client.rpush(started_key, ctx.task_id)
    item = client.blpop([release_key], timeout=RELEASE_TIMEOUT)
    if item is None:
        raise TimeoutError(
            f"timed out after {RELEASE_TIMEOUT} s waiting for an entry on {release_key}"
        )
    return item[1].decode()
