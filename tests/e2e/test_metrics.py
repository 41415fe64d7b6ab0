"""Metrics of a queue run by real `tasker worker` processes on a real redis-server.

The tasks in apps.metrics_tasks sleep for known durations, so the times that
TaskManager.metrics() reports can be checked against them, within the 10%
error of the percentile buckets plus some scheduling delay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from apps import metrics_tasks
from apps.metrics_tasks import fail_ms, flaky_ms, sleep_ms
from helpers import wait_until

from tasker_redis import TaskFailed, TaskManager
from tasker_redis.keys import QueueKeys
from tasker_redis.metrics import (
    COMPLETED,
    FAILED,
    RETRIED,
    SLOT_SECONDS,
    WINDOW_SECONDS,
)

pytestmark = pytest.mark.e2e

# Seconds a test waits for a result or for a worker's metrics flush.
WAIT = 30
# Seconds a run may take beyond its sleep on a busy machine.
SLACK = 0.015
# The largest and smallest span, in seconds, that read_metrics divides counts
# by to get rates: the window plus the part of the current slot that passed.
MAX_SPAN = WINDOW_SECONDS + SLOT_SECONDS
MIN_SPAN = WINDOW_SECONDS
SPEC = "apps.metrics_tasks:config"

MakeManager = Callable[[str], TaskManager]


@pytest.fixture
def make_manager(redis_url: str) -> Iterator[MakeManager]:
    """Return a function that builds a TaskManager of apps.metrics_tasks for a queue."""
    managers: list[TaskManager] = []

    def make(queue: str) -> TaskManager:
        manager = TaskManager(
            metrics_tasks.build_config(redis_url=redis_url, queue=queue)
        )
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.kill()


def slot_total(client: redis.Redis, queue: str, field: str) -> int:
    """Return the sum of one field over every metrics slot hash of a queue."""
    total = 0
    for key in client.keys(QueueKeys(queue).metrics("*")):
        total += int(client.hget(key, field) or 0)
    return total


def flushed(client: redis.Redis, queue: str, **expected: int) -> Callable[[], bool]:
    """Return a condition that is true once the slot hashes have these totals."""

    def condition() -> bool:
        return all(
            slot_total(client, queue, field) == count
            for field, count in expected.items()
        )

    return condition


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(fraction * len(ordered)) - 1]


def test_worker_metrics_match_runs(
    make_manager: MakeManager, start_workers: Any, redis_client: redis.Redis
) -> None:
    queue = "metrics-known"
    start_workers(SPEC, env={"METRICS_QUEUE": queue})
    manager = make_manager(queue)
    # Ten runs each of 10, 20 and 50 ms, two failures after 20 ms, and one
    # task retried once at once, then run for 10 ms.
    sleeps = [10] * 10 + [20] * 10 + [50] * 10
    futures = [manager.queue_task_async(sleep_ms, ms) for ms in sleeps]
    failures = [manager.queue_task_async(fail_ms, 20) for _ in range(2)]
    flaky = manager.queue_task_async(flaky_ms, 10)

    assert [future.result(timeout=WAIT) for future in futures] == sleeps
    for future in failures:
        with pytest.raises(TaskFailed, match="failed after 20 ms"):
            future.result(timeout=WAIT)
    assert flaky.result(timeout=WAIT) == 10
    # Wait for the worker's flush before run_task, whose own flushes add to
    # the same fields.
    wait_until(
        flushed(redis_client, queue, completed=31, failed=2, retried=1),
        timeout=WAIT,
    )
    assert manager.run_task(sleep_ms, 20) == 20
    assert manager.run_task(sleep_ms, 20) == 20
    assert manager.run_task(sleep_ms, 20) == 20
    with pytest.raises(ValueError, match="failed after 10 ms"):
        manager.run_task(fail_ms, 10)

    metrics = manager.metrics()

    timed = [*sleeps, 20, 20, 10, 20, 20, 20, 10]
    average = sum(timed) / len(timed) / 1000
    assert metrics.total_tasks_completed == 34
    assert metrics.total_tasks_failed == 3
    assert metrics.total_tasks_retried == 1
    assert metrics.success_rate == pytest.approx(34 / 37)
    assert metrics.failure_rate == pytest.approx(3 / 37)
    assert metrics.average_execution_time >= average
    assert metrics.average_execution_time <= average + SLACK
    assert metrics.min_execution_time >= 0.010
    assert metrics.min_execution_time <= 0.010 + SLACK
    assert metrics.max_execution_time >= 0.050
    assert metrics.max_execution_time <= 0.050 + SLACK
    p95 = nearest_rank(timed, 0.95) / 1000
    assert p95 == 0.050
    assert metrics.p95_execution_time >= p95 / 1.1
    assert metrics.p95_execution_time <= (p95 + SLACK) * 1.1
    assert metrics.p99_execution_time >= p95 / 1.1
    assert metrics.p99_execution_time <= (p95 + SLACK) * 1.1
    # 33 tasks were queued; the retry goes back to the queue without
    # arriving again. Completions count the 31 worker runs and 3 run_task calls.
    assert metrics.task_arrival_rate >= 33 / MAX_SPAN
    assert metrics.task_arrival_rate <= 33 / MIN_SPAN
    assert metrics.task_completion_rate >= 34 / MAX_SPAN
    assert metrics.task_completion_rate <= 34 / MIN_SPAN
    assert metrics.average_wait_time > 0
    assert metrics.p95_wait_time > 0


def test_wait_time_of_backlog(
    make_manager: MakeManager, start_workers: Any, redis_client: redis.Redis
) -> None:
    queue = "metrics-backlog"
    manager = make_manager(queue)
    # Queued before any worker runs, the tasks wait at least until one
    # starts, then behind each other: the last waits for the other nine.
    futures = [manager.queue_task_async(sleep_ms, 50) for _ in range(10)]
    assert manager.flush(timeout=WAIT)
    start_workers(SPEC, env={"METRICS_QUEUE": queue})

    assert [future.result(timeout=WAIT) for future in futures] == [50] * 10
    wait_until(flushed(redis_client, queue, completed=10), timeout=WAIT)
    metrics = manager.metrics()

    assert metrics.p95_wait_time >= 9 * 0.050 / 1.1
    assert metrics.average_wait_time >= 4.5 * 0.050


def test_collector_gets_each_run(
    make_manager: MakeManager, start_workers: Any, redis_client: redis.Redis
) -> None:
    queue = "metrics-events"
    start_workers(SPEC, env={"METRICS_QUEUE": queue})
    manager = make_manager(queue)
    short = manager.queue_task_async(sleep_ms, 10)
    long = manager.queue_task_async(sleep_ms, 50)
    failure = manager.queue_task_async(fail_ms, 20)
    flaky = manager.queue_task_async(flaky_ms, 20)

    assert short.result(timeout=WAIT) == 10
    assert long.result(timeout=WAIT) == 50
    with pytest.raises(TaskFailed, match="failed after 20 ms"):
        failure.result(timeout=WAIT)
    assert flaky.result(timeout=WAIT) == 20
    assert manager.run_task(sleep_ms, 20) == 20
    with pytest.raises(ValueError, match="failed after 10 ms"):
        manager.run_task(fail_ms, 10)
    wait_until(lambda: redis_client.llen(metrics_tasks.EVENTS) == 7, timeout=WAIT)

    events = metrics_tasks.read_events(redis_client)

    by_id = {event["task_id"]: event for event in events if not event["local"]}
    queued = [
        (short.task_id, "metrics.sleep", COMPLETED, 10),
        (long.task_id, "metrics.sleep", COMPLETED, 50),
        (failure.task_id, "metrics.fail", FAILED, 20),
    ]
    for task_id, name, outcome, ms in queued:
        event = by_id[task_id]
        assert event["queue"] == queue
        assert event["task_name"] == name
        assert event["outcome"] == outcome
        assert event["execution_time"] >= ms / 1000
        assert event["execution_time"] <= ms / 1000 + SLACK
        assert event["wait_time"] > 0
    flaky_events = [event for event in events if event["task_id"] == flaky.task_id]
    assert [event["outcome"] for event in flaky_events] == [RETRIED, COMPLETED]
    assert flaky_events[0]["execution_time"] < SLACK
    assert flaky_events[1]["execution_time"] >= 0.020
    assert flaky_events[1]["execution_time"] <= 0.020 + SLACK
    local = [event for event in events if event["local"]]
    assert [(event["task_name"], event["outcome"]) for event in local] == [
        ("metrics.sleep", COMPLETED),
        ("metrics.fail", FAILED),
    ]
    assert [event["wait_time"] for event in local] == [0.0, 0.0]
    assert local[0]["execution_time"] >= 0.020
    assert local[0]["execution_time"] <= 0.020 + SLACK
    assert local[1]["execution_time"] >= 0.010
    assert local[1]["execution_time"] <= 0.010 + SLACK


def test_heartbeat_survives_flush_error(
    make_manager: MakeManager, start_workers: Any, redis_client: redis.Redis
) -> None:
    # A reply error of the metrics script, such as OOM under maxmemory or
    # READONLY after a failover, must not stop the worker's heartbeat. Here
    # e_sum_us sits at the int64 maximum in every slot of the next minute,
    # so each flush fails with "increment or decrement would overflow".
    queue = "metrics-flush-error"
    keys = QueueKeys(queue)
    seconds, _ = redis_client.time()
    for slot in range(seconds // SLOT_SECONDS, seconds // SLOT_SECONDS + 13):
        redis_client.hset(keys.metrics(slot), "e_sum_us", 2**63 - 1)
    # The worker beats every 0.5 s and flushes its metrics every second.
    start_workers(SPEC, env={"METRICS_QUEUE": queue, "METRICS_LEASE_TIMEOUT": "1.5"})
    manager = make_manager(queue)

    assert manager.queue_task(sleep_ms, 10) == 10
    seconds, micros = redis_client.time()
    finished_ms = seconds * 1000 + micros // 1000

    def beat_after_flush() -> bool:
        beats = redis_client.zrange(keys.workers, 0, -1, withscores=True)
        return any(score >= finished_ms + 1500 for _, score in beats)

    wait_until(beat_after_flush, timeout=10)
