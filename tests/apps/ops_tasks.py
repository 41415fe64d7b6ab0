"""Tasks and a Config for the operator-command tests in tests/e2e/test_cli_ops.py.

The resource is a redis-py client of the Config's Redis URL, so a task can
push to a list that a test blocks on.

Environment variables that tune the Config:
    OPS_QUEUE: queue name, "default" by default, which is also the queue
        that the `tasker` operator commands use without --queue.
    OPS_LATE: "1" registers the task "ops.late", which is otherwise unknown
        to the worker, so that tests can dead-letter it and retry it later.
"""

from __future__ import annotations

import os

import redis

from tasker_redis import Config, TaskContext, task
from tasker_redis.config import default_redis_url

QUEUE = "default"

# Seconds a blocking task waits for its release before it fails, so that a
# broken test cannot leave a worker blocked for the whole pytest timeout.
RELEASE_TIMEOUT = 30

FAILURE = "the numbers disagree"


def create_client() -> redis.Redis:
    """Create the worker's resource: a client of the queue's server."""
    return redis.Redis.from_url(default_redis_url(), socket_timeout=120)


def close_client(client: redis.Redis) -> None:
    """Close the worker's resource."""
    client.close()


config = Config(
    on_create=create_client,
    on_destroy=close_client,
    queue=os.environ.get("OPS_QUEUE", QUEUE),
    # An idle worker notices a stop request within this many seconds.
    block_timeout=0.2,
)


@task(name="ops.multiply")
def multiply(ctx: TaskContext, client: redis.Redis, a: int, b: int) -> int:
    """Return a * b."""
    return a * b


@task(name="ops.describe")
def describe(
    ctx: TaskContext, client: redis.Redis, *args: object, **kwargs: object
) -> dict[str, object]:
    """Return the arguments and whether the task came from the high-priority queue."""
    return {"args": list(args), "kwargs": kwargs, "high_priority": ctx.high_priority}


@task(name="ops.fail")
def fail(ctx: TaskContext, client: redis.Redis) -> None:
    """Raise ValueError with FAILURE."""
    raise ValueError(FAILURE)


@task(name="ops.block")
def block(ctx: TaskContext, client: redis.Redis, started: str, release: str) -> str:
    """Push the task id to the list started, then wait for an entry on release.

    Returns:
        The entry popped from release.

    Raises:
        TimeoutError: Nothing arrived on release within RELEASE_TIMEOUT seconds.
    """
    client.rpush(started, ctx.task_id)
    item = client.blpop([release], timeout=RELEASE_TIMEOUT)
    if item is None:
        raise TimeoutError(
            f"timed out after {RELEASE_TIMEOUT} s waiting for an entry on {release}"
        )
    return str(item[1].decode())


def late(ctx: TaskContext, client: redis.Redis, value: int) -> int:
    """Return value + 1; registered only when OPS_LATE is "1"."""
    return value + 1


if os.environ.get("OPS_LATE") == "1":
    task(name="ops.late")(late)
