"""Tasks and a Config for tests/e2e/test_core.py and test_durability.py.

Every task reports what it does to Redis lists and counters named below, with
a client that on_create builds, so a test waits on real events (BLPOP on
EVENTS) instead of sleeping. Workers read their settings from environment
variables, so each test sets the queue, the lease and the limits it needs:

    CORE_QUEUE, CORE_LEASE_TIMEOUT, CORE_MAX_RETRIES, CORE_MAX_CRASHES,
    CORE_RESULT_TTL, CORE_BLOCK_TIMEOUT

CORE_FAIL_CREATE_AFTER=N makes on_create raise from the (N + 1)-th resource on.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from tasker_redis import Config, TaskContext, task

# Counters of on_create and on_destroy calls across all worker processes.
CREATED = "core:created"
DESTROYED = "core:destroyed"
# List of one JSON object per task run, in start order.
EVENTS = "core:events"
# List of the pids of worker processes that received SIGTERM.
SIGTERMS = "core:sigterms"
# Seconds a task waits for its gate before it fails, so a broken test cannot
# leave a worker blocked for the whole pytest timeout.
GATE_TIMEOUT = 60

SETTINGS_FROM_ENV = {
    "queue": ("CORE_QUEUE", str),
    "lease_timeout": ("CORE_LEASE_TIMEOUT", float),
    "max_retries": ("CORE_MAX_RETRIES", int),
    "max_crashes": ("CORE_MAX_CRASHES", int),
    "result_ttl": ("CORE_RESULT_TTL", float),
    "block_timeout": ("CORE_BLOCK_TIMEOUT", float),
}


class ResourceBroken(Exception):
    """Raised by a task to make check_health judge its resource unhealthy."""


@dataclass
class Resource:
    """A worker's resource: its creation number and a client for reporting.

    Attributes:
        serial: 1 for the first resource created on this Redis server, 2 for
            the next, across all worker processes.
        client: A Redis client of the test's server, used only by tasks.
    """

    serial: int
    client: redis.Redis


def runs_key(task_id: str) -> str:
    """Return the key of the counter of runs of one task."""
    return f"core:runs:{task_id}"


def gate_key(label: str) -> str:
    """Return the key of the list that a held task waits on for a test's push."""
    return f"core:gate:{label}"


def settings_env(**settings: Any) -> dict[str, str]:
    """Return the environment variables that make config() use these settings."""
    env = {}
    for name, value in settings.items():
        variable, _ = SETTINGS_FROM_ENV[name]
        env[variable] = str(value)
    return env


def build_config(**settings: Any) -> Config:
    """Return the Config of the test queue with the given settings.

    block_timeout defaults to 0.2 s so that idle workers stop quickly.
    """
    settings.setdefault("block_timeout", 0.2)
    return Config(
        on_create=create_resource,
        on_destroy=destroy_resource,
        check_health=check_health,
        **settings,
    )


def config() -> Config:
    """Return the Config for `tasker worker apps.core_tasks:config`, read from env."""
    settings: dict[str, Any] = {}
    for name, (variable, convert) in SETTINGS_FROM_ENV.items():
        if variable in os.environ:
            settings[name] = convert(os.environ[variable])
    return build_config(**settings)


def create_resource() -> Resource:
    client = redis.Redis.from_url(os.environ["TASKER_REDIS_URL"], socket_timeout=120)
    serial = int(client.incr(CREATED))
    limit = os.environ.get("CORE_FAIL_CREATE_AFTER")
    if limit is not None and serial > int(limit):
        raise RuntimeError(f"resource {serial} refused: CORE_FAIL_CREATE_AFTER={limit}")
    # Only the main thread may install signal handlers; with several threads
    # per worker process, the others skip it.
    if threading.current_thread() is threading.main_thread():
        _report_sigterm()
    return Resource(serial, client)


def destroy_resource(resource: Resource) -> None:
    resource.client.incr(DESTROYED)
    resource.client.close()


def check_health(error: BaseException) -> bool:
    return not isinstance(error, ResourceBroken)


@functools.cache
def _report_sigterm() -> None:
    """Make this worker process push its pid to SIGTERMS when it gets SIGTERM.

    on_create runs after the worker installed its own handler, which this one
    calls next, so the worker still stops as it would without the report.
    The cache makes later resources of the same process skip it.
    """
    # The handler has a client of its own because it may interrupt a command
    # in progress on any other client of this process.
    client = redis.Redis.from_url(os.environ["TASKER_REDIS_URL"], socket_timeout=120)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        client.rpush(SIGTERMS, os.getpid())
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _record_run(context: TaskContext, resource: Resource, label: str) -> int:
    """Count one run of the task, push its event and return the run number."""
    run = int(resource.client.incr(runs_key(context.task_id)))
    seconds, microseconds = resource.client.time()
    event = {
        "label": label,
        "task_id": context.task_id,
        "worker_id": context.worker_id,
        "pid": os.getpid(),
        "attempt": context.attempt,
        "high_priority": context.high_priority,
        "serial": resource.serial,
        "run": run,
        "server_ms": seconds * 1000 + microseconds // 1000,
    }
    resource.client.rpush(EVENTS, json.dumps(event))
    return run


def _wait_for_gate(resource: Resource, label: str) -> None:
    if resource.client.blpop([gate_key(label)], timeout=GATE_TIMEOUT) is None:
        raise TimeoutError(f"gate {label!r} was not opened within {GATE_TIMEOUT} s")


@task
def record(context: TaskContext, resource: Resource, label: str) -> str:
    """Push a start event and return the label."""
    _record_run(context, resource, label)
    return label


@task
def hold(
    context: TaskContext, resource: Resource, label: str, held_runs: int = 1
) -> dict[str, Any]:
    """Wait for the gate of label on the first held_runs runs, then return details."""
    run = _record_run(context, resource, label)
    if run <= held_runs:
        _wait_for_gate(resource, label)
    return {"label": label, "run": run, "attempt": context.attempt}


@task
def write_then_hold(context: TaskContext, resource: Resource, label: str) -> int:
    """Increment the side-effect counter of label, then wait for the gate on run 1.

    Returns the counter after this run's write.
    """
    run = _record_run(context, resource, label)
    written = int(resource.client.incr(f"core:side-effect:{label}"))
    resource.client.rpush(f"core:written:{label}", run)
    if run == 1:
        _wait_for_gate(resource, label)
    return written


@task
def work(context: TaskContext, resource: Resource, label: str, seconds: float) -> int:
    """Push an event, sleep for seconds like a long computation, return the run."""
    run = _record_run(context, resource, label)
    time.sleep(seconds)
    return run


@task
def echo(context: TaskContext, resource: Resource, value: Any) -> Any:
    """Return value unchanged."""
    return value


@task
def describe(context: TaskContext, resource: Resource, value: Any) -> str:
    """Return the type name of value as the worker received it."""
    return type(value).__name__


@task
def flags(context: TaskContext, resource: Resource, label: str) -> list[bool]:
    """Return [high priority, at-most-once] as the worker and Redis see them."""
    _record_run(context, resource, label)
    once = resource.client.sismember(
        f"tasker:{{{context.queue}}}:once", context.task_id
    )
    return [context.high_priority, bool(once)]


@task
def fail_with(context: TaskContext, resource: Resource, message: str) -> None:
    """Raise ValueError(message), a failure that leaves the resource healthy."""
    _record_run(context, resource, "fail_with")
    raise ValueError(message)


@task
def break_resource(context: TaskContext, resource: Resource, label: str) -> None:
    """Raise ResourceBroken on every run, so every run is an unhealthy failure."""
    _record_run(context, resource, label)
    raise ResourceBroken(f"resource {resource.serial} is broken")


@task
def break_first_run(context: TaskContext, resource: Resource, value: Any) -> Any:
    """Raise ResourceBroken on the first run, and return [value, attempt] after it."""
    run = _record_run(context, resource, "break_first_run")
    if run == 1:
        raise ResourceBroken(f"resource {resource.serial} is broken")
    return [value, context.attempt]


@task
def exit_worker(context: TaskContext, resource: Resource, label: str) -> None:
    """Push a start event, then raise SystemExit as sys.exit() does."""
    _record_run(context, resource, label)
    sys.exit(3)


@task(timeout=1.0)
def spin(context: TaskContext, resource: Resource, label: str) -> None:
    """Push a start event, then loop without looking at the context's deadline."""
    _record_run(context, resource, label)
    while True:
        pass


@task
def kill_process(context: TaskContext, resource: Resource, label: str) -> None:
    """Push a start event, then end the worker process at once with os._exit(1)."""
    _record_run(context, resource, label)
    os._exit(1)
