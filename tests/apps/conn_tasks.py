"""Tasks and a Config for the connection-fault runs in tests/faults/test_connections.py.

Each worker's resource is a Redis client of its own, named conn-counter, that
connects to $CONN_COUNTER_URL (default: the queue's URL). The tests point it
past their proxy and never kill it, so the run counts it writes stay exact
while the queue's own connections are killed, cut and stalled.

Workers read their timeouts from the environment:

    CONN_BLOCK_TIMEOUT   seconds (default 1.0)
    CONN_SOCKET_TIMEOUT  seconds (default 10.0)
    CONN_LEASE_TIMEOUT   seconds (default 3.0)
    CONN_MAX_CRASHES     crash re-deliveries before dead-lettering (default 3)
"""

from __future__ import annotations

import os

import redis

from tasker_redis import Config, TaskContext, task
from tasker_redis.config import default_redis_url

QUEUE = "conn"
COUNTER_URL_ENV = "CONN_COUNTER_URL"
COUNTER_NAME = "conn-counter"

# Hash of task index to the number of times a task with that index ran.
RUNS_KEY = "conn:runs"


def create_counter() -> redis.Redis:
    """Create the client that tasks count their runs with."""
    url = os.environ.get(COUNTER_URL_ENV) or default_redis_url()
    return redis.Redis.from_url(url, client_name=COUNTER_NAME, socket_timeout=10.0)


def close_counter(counter: redis.Redis) -> None:
    counter.close()


def make_config(
    redis_url: str | None = None,
    *,
    block_timeout: float = 1.0,
    socket_timeout: float = 10.0,
    lease_timeout: float = 3.0,
    max_crashes: int = 3,
) -> Config:
    """Build the Config shared by the test's producers and the workers."""
    return Config(
        on_create=create_counter,
        on_destroy=close_counter,
        redis_url=redis_url or default_redis_url(),
        queue=QUEUE,
        block_timeout=block_timeout,
        socket_timeout=socket_timeout,
        lease_timeout=lease_timeout,
        max_crashes=max_crashes,
    )


def config() -> Config:
    """Return the workers' Config, read from the environment (see the module doc)."""
    return make_config(
        block_timeout=float(os.environ.get("CONN_BLOCK_TIMEOUT", "1.0")),
        socket_timeout=float(os.environ.get("CONN_SOCKET_TIMEOUT", "10.0")),
        lease_timeout=float(os.environ.get("CONN_LEASE_TIMEOUT", "3.0")),
        max_crashes=int(os.environ.get("CONN_MAX_CRASHES", "3")),
    )


@task(name="conn.count")
def count(
    context: TaskContext, counter: redis.Redis, index: int, seconds: float = 0.0
) -> int:
    """Count one run of the task with this index, wait for seconds, return index."""
    counter.hincrby(RUNS_KEY, str(index), 1)
    if seconds > 0:
        context.wait(seconds)
    return index
