"""Fault runs that SIGKILL worker processes while they run a stream of tasks.

A supervisor with three workers runs 2,000 tasks while the test kills one of
its worker processes every ~200 ms for up to KILL_SECONDS; the supervisor
starts a replacement and releases the dead worker's tasks. No task may be
lost: an at-least-once task completes, maybe after running twice, and an
at-most-once task runs at most once, failing with TaskLost if a kill
interrupted it.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import pytest
import redis
from apps import fault_tasks
from apps.fault_harness import (
    MakeManager,
    Stopwatch,
    collect,
    leftover_tasks,
    queue_counters,
    report,
    run_counts,
    signal_worker,
    wait_for_workers,
    worker_pids,
)

from tasker_redis import TaskFuture, TaskLost

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS = 2000
WORKERS = 3
# Seconds each task sleeps, so that kills often land in the middle of one.
TASK_SECONDS = 0.002
KILL_INTERVAL = 0.2
# Seconds of kills per run. The supervisor starts the replacement of a worker
# that lived less than 5 s after a backoff of up to 2 s, so under a kill every
# 200 ms the pool runs few tasks. The kills stop after this window, which
# bounds the run time.
KILL_SECONDS = 8.0
LEASE_TIMEOUT = 2.0
# Seconds the rest of a run may take after the kills stop, before the
# remaining futures count as lost.
FINISH_TIMEOUT = 30.0
# Kills a run must reach for its figures to mean anything.
MIN_KILLS = 10


def kill_workers(
    client: redis.Redis, supervisor_pid: int, futures: list[TaskFuture]
) -> int:
    """SIGKILL a random worker every KILL_INTERVAL until the futures are done.

    Kills stop after KILL_SECONDS even if futures are still waiting.

    Returns:
        The number of worker processes killed.
    """
    rng = random.Random(20240601)
    kills = 0
    deadline = time.monotonic() + KILL_SECONDS
    while time.monotonic() < deadline and not all(f.done() for f in futures):
        # The kill cadence is the fault schedule under test, not a wait.
        time.sleep(KILL_INTERVAL)
        pids = worker_pids(client, supervisor_pid)
        if pids and signal_worker(rng.choice(pids), supervisor_pid, signal.SIGKILL):
            kills += 1
    return kills


def start_three_workers(start_workers, client: redis.Redis) -> int:
    supervisor = start_workers(
        "apps.fault_tasks:config",
        "--workers",
        str(WORKERS),
        env={"FAULT_LEASE_TIMEOUT": str(LEASE_TIMEOUT)},
    )
    wait_for_workers(client, supervisor, WORKERS)
    return supervisor.pid


def test_kills_lose_no_task(
    start_workers, make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    supervisor_pid = start_three_workers(start_workers, redis_client)
    manager = make_manager(lease_timeout=LEASE_TIMEOUT)
    clock = Stopwatch()

    futures = [
        manager.queue_task_async(fault_tasks.echo, number, TASK_SECONDS)
        for number in range(TASKS)
    ]
    kills = kill_workers(redis_client, supervisor_pid, futures)
    done_during_kills = sum(1 for future in futures if future.done())
    kill_phase = clock.elapsed
    outcomes = collect(futures, timeout=FINISH_TIMEOUT)
    task_ids = [future.task_id for future in futures]
    runs = Counter(run_counts(redis_client, task_ids))
    counters = queue_counters(redis_client)
    report(
        "worker kills, at-least-once",
        tasks=TASKS,
        kills=kills,
        completed=len(outcomes.values),
        errors=dict(outcomes.error_types()),
        lost=len(outcomes.pending),
        ran_twice=sum(n for times, n in runs.items() if times >= 2),
        runs_histogram=dict(sorted(runs.items())),
        done_during_kills=done_during_kills,
        kill_seconds=round(kill_phase, 1),
        seconds=round(clock.elapsed, 1),
    )

    assert outcomes.pending == []
    assert outcomes.errors == {}
    assert [outcomes.values[task_id] for task_id in task_ids] == list(range(TASKS))
    assert runs[0] == 0
    assert counters.get("completed") == TASKS
    assert leftover_tasks(redis_client) == 0
    assert kills >= MIN_KILLS


def test_kills_never_repeat_once(
    start_workers, make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    supervisor_pid = start_three_workers(start_workers, redis_client)
    manager = make_manager(lease_timeout=LEASE_TIMEOUT)
    clock = Stopwatch()

    futures = [
        manager.queue_task_once_async(fault_tasks.echo, number, TASK_SECONDS)
        for number in range(TASKS)
    ]
    kills = kill_workers(redis_client, supervisor_pid, futures)
    outcomes = collect(futures, timeout=FINISH_TIMEOUT)
    task_ids = [future.task_id for future in futures]
    runs = dict(zip(task_ids, run_counts(redis_client, task_ids), strict=True))
    lost_runs = Counter(runs[task_id] for task_id in outcomes.errors)
    counters = queue_counters(redis_client)
    report(
        "worker kills, at-most-once",
        tasks=TASKS,
        kills=kills,
        completed=len(outcomes.values),
        task_lost=len(outcomes.errors),
        task_lost_after_running=lost_runs[1],
        task_lost_never_started=lost_runs[0],
        lost=len(outcomes.pending),
        ran_twice=sum(1 for count in runs.values() if count >= 2),
        seconds=round(clock.elapsed, 1),
    )

    assert outcomes.pending == []
    assert max(runs.values()) == 1
    assert set(outcomes.error_types()) <= {TaskLost.__name__}
    for number, task_id in enumerate(task_ids):
        if task_id in outcomes.values:
            assert runs[task_id] == 1
            assert outcomes.values[task_id] == number
    assert counters.get("completed") == len(outcomes.values)
    assert counters.get("lost", 0) == len(outcomes.errors)
    assert leftover_tasks(redis_client) == 0
    assert kills >= MIN_KILLS
