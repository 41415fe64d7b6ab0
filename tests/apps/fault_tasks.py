"""Tasks and a Config for the fault-injection runs in tests/faults/.

Every task but noop records each run in Redis before anything else, as one
member of the set `fault:runs:<task id>`, so a test can count how often each
task ran. The member is unique per run and SADD is idempotent, so a task
resends it after a dropped connection without counting a run twice.

Workers read their settings from environment variables, so each test sets
the lease and the crash limit it needs:

    FAULT_LEASE_TIMEOUT  seconds (default 2.0)
    FAULT_MAX_CRASHES    crash re-deliveries before dead-lettering (default 3)
    FAULT_RUN_LOG        a directory. If set, every run also appends the task
                         id to a file there, which keeps a record of the run
                         even if Redis loses data.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
import uuid
from typing import Any

import redis

from tasker_redis import Config, TaskContext, task
from tasker_redis.config import default_redis_url
from tasker_redis.connection import Backoff

QUEUE = "faults"
RUN_LOG_ENV = "FAULT_RUN_LOG"

# Seconds a task keeps resending its run record while Redis is unreachable,
# so that it outlives a Redis restart instead of failing.
REPORT_TIMEOUT = 30.0


def runs_key(task_id: str) -> str:
    """Return the key of the set with one member per run of a task."""
    return f"fault:runs:{task_id}"


def create_client(redis_url: str | None = None) -> redis.Redis:
    """Create the Redis client that tasks report their runs with."""
    return redis.Redis.from_url(
        redis_url or default_redis_url(), socket_timeout=5.0, socket_connect_timeout=2.0
    )


def close_client(client: redis.Redis) -> None:
    client.close()


def make_config(
    redis_url: str | None = None,
    *,
    lease_timeout: float = 2.0,
    max_crashes: int = 3,
) -> Config:
    """Build the Config shared by the test's producer and the workers."""
    return Config(
        on_create=create_client,
        on_destroy=close_client,
        redis_url=redis_url or default_redis_url(),
        queue=QUEUE,
        lease_timeout=lease_timeout,
        max_crashes=max_crashes,
    )


def config() -> Config:
    """Return the workers' Config, read from the environment (see the module doc)."""
    return make_config(
        lease_timeout=float(os.environ.get("FAULT_LEASE_TIMEOUT", "2.0")),
        max_crashes=int(os.environ.get("FAULT_MAX_CRASHES", "3")),
    )


def record_run(context: TaskContext, client: redis.Redis) -> None:
    """Record one run of the current task in Redis and, if set, in the run log.

    Raises:
        redis.ConnectionError: Redis stayed unreachable for REPORT_TIMEOUT.
    """
    member = f"{os.getpid()}-{uuid.uuid4().hex}"
    backoff = Backoff(base=0.02, cap=0.5)
    deadline = time.monotonic() + REPORT_TIMEOUT
    while True:
        try:
            client.sadd(runs_key(context.task_id), member)
            break
        except (redis.ConnectionError, redis.TimeoutError):
            # Resending is safe: the member is unique to this run.
            if time.monotonic() > deadline:
                raise
            time.sleep(backoff.next_delay())
    log_dir = os.environ.get(RUN_LOG_ENV)
    if log_dir:
        # One write() call per line, appended, survives a kill of the worker.
        path = os.path.join(log_dir, f"runs-{os.getpid()}.log")
        with open(path, "a", encoding="ascii") as log:
            log.write(context.task_id + "\n")


@task
def echo(
    context: TaskContext, client: redis.Redis, value: Any, seconds: float = 0.0
) -> Any:
    """Record the run, sleep for seconds and return value."""
    record_run(context, client)
    if seconds > 0:
        time.sleep(seconds)
    return value


@task
def noop(context: TaskContext, client: redis.Redis, value: Any) -> Any:
    """Return value without recording the run.

    With no round trip to Redis the run is short, so the worker claims many
    of these tasks per round trip.
    """
    return value


@task
def hold(context: TaskContext, client: redis.Redis, seconds: float) -> dict[str, Any]:
    """Record the run, sleep for seconds, return the worker's pid and clock."""
    record_run(context, client)
    time.sleep(seconds)
    return {"pid": os.getpid(), "time": time.time()}


@task
def exit_worker(context: TaskContext, client: redis.Redis) -> None:
    """Record the run and end the worker process with exit code 1."""
    record_run(context, client)
    os._exit(1)


@task
def exit_worker_cleanly(context: TaskContext, client: redis.Redis) -> None:
    """Record the run and end the worker process with exit code 0."""
    record_run(context, client)
    os._exit(0)


@task
def exit_worker_with_startup_code(context: TaskContext, client: redis.Redis) -> None:
    """Record the run and exit with 3, the code of a failed resource creation."""
    record_run(context, client)
    os._exit(3)


@task
def raise_system_exit(context: TaskContext, client: redis.Redis) -> None:
    """Record the run and raise SystemExit, as sys.exit() does."""
    record_run(context, client)
    sys.exit(0)


@task
def segfault_worker(context: TaskContext, client: redis.Redis) -> None:
    """Record the run and kill the worker process with SIGSEGV."""
    record_run(context, client)
    # No core file: the worker's working directory is tests/.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signal.SIGSEGV)
