"""Helpers for the fault-injection runs in tests/faults/.

They find and signal the worker processes of a supervisor that the test
started, collect the outcome of every future of a run, and read the run
records and queue state that the tasks of apps.fault_tasks leave in Redis.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from helpers import wait_until

from apps import fault_tasks
from tasker_redis import TaskFuture, TaskManager
from tasker_redis.keys import QueueKeys

KEYS = QueueKeys(fault_tasks.QUEUE)

# The make_manager fixture: keyword arguments of fault_tasks.make_config in,
# a TaskManager of the test's Redis server out.
MakeManager = Callable[..., TaskManager]


def parent_pid(pid: int) -> int | None:
    """Return the parent pid of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in brackets may contain spaces, so split after it.
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1])


def worker_pids(client: redis.Redis, supervisor_pid: int) -> list[int]:
    """Return the pids of the live worker processes of one supervisor.

    The ids come from the queue's worker set and the pids from each worker's
    info hash. Entries of dead workers stay there until they expire, so only
    pids that are still children of the supervisor are returned.
    """
    pids = []
    for worker_id in client.zrange(KEYS.workers, 0, -1):
        value = client.hget(KEYS.worker_info(worker_id.decode()), "pid")
        if value is None:
            continue
        pid = int(value)
        if parent_pid(pid) == supervisor_pid:
            pids.append(pid)
    return pids


def wait_for_workers(
    client: redis.Redis, supervisor: Any, count: int, timeout: float = 20.0
) -> list[int]:
    """Wait until a supervisor started by start_workers has count live workers.

    Returns:
        The pids of its worker processes.

    Raises:
        pytest.fail.Exception: They did not start within timeout seconds. The
            message ends with the supervisor's log.
    """
    try:
        wait_until(
            lambda: len(worker_pids(client, supervisor.pid)) == count, timeout=timeout
        )
    except pytest.fail.Exception:
        pytest.fail(
            f"supervisor {supervisor.pid} did not start {count} workers within "
            f"{timeout} s; the end of its log:\n{supervisor.log()[-3000:]}"
        )
    return worker_pids(client, supervisor.pid)


def signal_worker(pid: int, supervisor_pid: int, signum: int) -> bool:
    """Send a signal to a worker process if it is still a child of the supervisor.

    A pidfd pins the process, so the signal cannot reach another process
    that reused the pid after the check.

    Returns:
        False if the process was gone or belongs to another parent.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        if parent_pid(pid) != supervisor_pid:
            return False
        signal.pidfd_send_signal(pidfd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(pidfd)


def run_counts(client: redis.Redis, task_ids: Sequence[str]) -> list[int]:
    """Return how many times each task recorded a run, in the order given."""
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.scard(fault_tasks.runs_key(task_id))
        return [int(count) for count in pipe.execute()]


def queue_counters(client: redis.Redis) -> dict[str, int]:
    """Return the queue's counters hash: completed, failed, lost, dead_lettered."""
    raw = client.hgetall(KEYS.counters)
    return {key.decode(): int(value) for key, value in raw.items()}


def leftover_tasks(client: redis.Redis) -> int:
    """Return the number of tasks still queued, in flight or stored for the queue."""
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(KEYS.normal)
        pipe.llen(KEYS.high)
        pipe.zcard(KEYS.inflight)
        pipe.hlen(KEYS.tasks)
        return sum(int(count) for count in pipe.execute())


@dataclass
class Outcomes:
    """What the callers of one run received, by task id.

    Attributes:
        values: Task id to the returned value, for tasks that completed.
        errors: Task id to the exception the caller received.
        pending: Ids of tasks whose caller received nothing before the
            deadline.
    """

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    def error_types(self) -> Counter[str]:
        """Count the errors by exception class name."""
        return Counter(type(error).__name__ for error in self.errors.values())


def sort_outcomes(futures: Iterable[TaskFuture]) -> Outcomes:
    """Sort the futures by what their callers received so far."""
    outcomes = Outcomes()
    for future in futures:
        if not future.done():
            outcomes.pending.append(future.task_id)
        elif future.exception() is not None:
            outcomes.errors[future.task_id] = future.exception()
        else:
            outcomes.values[future.task_id] = future.result()
    return outcomes


def collect(futures: Iterable[TaskFuture], timeout: float) -> Outcomes:
    """Wait up to timeout seconds in all for the futures and sort their outcomes."""
    futures = list(futures)
    concurrent.futures.wait(futures, timeout=timeout)
    return sort_outcomes(futures)


def collect_until_quiet(
    client: redis.Redis, futures: Iterable[TaskFuture], timeout: float, quiet: float
) -> Outcomes:
    """Wait for the futures until all are done, or until no more can complete.

    A run that lost tasks or results leaves futures that never complete. Once
    no task is queued or in flight and no future completed for quiet
    seconds, the rest count as pending instead of waiting out the timeout.
    """
    futures = list(futures)
    deadline = time.monotonic() + timeout
    waiting = set(futures)
    last_progress = time.monotonic()
    while waiting and time.monotonic() < deadline:
        done, waiting = concurrent.futures.wait(waiting, timeout=0.5)
        if done:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > quiet and leftover_tasks(client) == 0:
            break
    return sort_outcomes(futures)


def report(title: str, **figures: object) -> None:
    """Print one line of figures for `pytest -s`."""
    details = " ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\n[{title}] {details}", flush=True)


class Stopwatch:
    """Seconds since creation, by the monotonic clock."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
