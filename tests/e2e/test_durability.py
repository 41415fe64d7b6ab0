"""End-to-end tests of what happens to tasks when workers die or are stopped.

Worker processes are killed with SIGKILL at chosen instants, found through
the pid each worker stores in its Redis hash, or stopped with SIGTERM through
their supervisor. Leases are 1 s so that expiry takes little time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from apps import core_tasks
from apps.core_harness import CoreQueue, process_alive, queue_factory
from helpers import wait_until

from tasker_redis import TaskDeadLettered, TaskLost, TaskManager

pytestmark = pytest.mark.e2e

MakeQueue = Callable[..., CoreQueue]

LEASE = 1.0


@pytest.fixture
def make_queue(
    redis_url: str, redis_client: redis.Redis, start_workers: Any
) -> Iterator[MakeQueue]:
    """Return a function that builds a CoreQueue with the given Config settings."""
    with queue_factory(redis_url, redis_client, start_workers) as make:
        yield make


def assert_task_gone(queue: CoreQueue, task_id: str) -> None:
    """Assert that nothing is left in Redis that could run the task again."""
    assert not queue.redis.hexists(queue.keys.tasks, task_id)
    assert queue.redis.zscore(queue.keys.inflight, task_id) is None
    assert queue.redis.llen(queue.keys.high) == 0
    assert queue.redis.llen(queue.keys.normal) == 0


# SIGKILL of one worker process


def test_kill_idle_worker_before_task(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-idle", lease_timeout=LEASE)
    queue.start(workers=1)
    alive = queue.wait_for_workers(1)
    victim_id, victim_pid = next(iter(alive.items()))

    # The task is queued while the only worker is dead or not yet replaced.
    os.kill(victim_pid, signal.SIGKILL)
    future = queue.manager.queue_task_async(core_tasks.record, "after-kill")

    assert future.result(timeout=10) == "after-kill"
    event = queue.next_event()
    assert event["worker_id"] != victim_id
    assert event["attempt"] == 1
    assert queue.runs(future.task_id) == 1


def test_kill_worker_mid_task(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-mid", lease_timeout=LEASE)
    queue.start(workers=2)
    future = queue.manager.queue_task_async(core_tasks.hold, "mid")
    first = queue.next_event()
    victim_pid = queue.worker_pid(first["worker_id"])
    assert victim_pid == first["pid"]

    os.kill(victim_pid, signal.SIGKILL)

    assert future.result(timeout=10) == {"label": "mid", "run": 2, "attempt": 2}
    second = queue.next_event()
    assert second["worker_id"] != first["worker_id"]
    assert second["task_id"] == future.task_id
    assert queue.runs(future.task_id) == 2
    assert_task_gone(queue, future.task_id)


def test_kill_worker_after_side_effect(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-after-write", lease_timeout=LEASE)
    queue.start(workers=2)
    future = queue.manager.queue_task_async(core_tasks.write_then_hold, "write")
    first = queue.next_event()
    # The first run wrote its side effect and has not returned yet.
    written = queue.redis.blpop(["core:written:write"], timeout=10)
    assert written is not None

    os.kill(queue.worker_pid(first["worker_id"]), signal.SIGKILL)

    # Another process waits by task id, as a caller that did not queue it.
    with TaskManager(queue.config) as other:
        assert other.result(future.task_id, timeout=10) == 2
    assert future.result(timeout=10) == 2
    second = queue.next_event()
    assert second["attempt"] == 2
    assert second["worker_id"] != first["worker_id"]
    # Delivery is at least once, so both runs applied the side effect.
    assert queue.counter("core:side-effect:write") == 2


def test_kill_worker_once_task_lost(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-once", lease_timeout=LEASE)
    queue.start(workers=2)
    future = queue.manager.queue_task_once_async(core_tasks.hold, "once")
    first = queue.next_event()

    os.kill(queue.worker_pid(first["worker_id"]), signal.SIGKILL)

    with pytest.raises(TaskLost) as raised:
        future.result(timeout=10)
    assert raised.value.task_id == future.task_id
    assert "not run again" in raised.value.remote_message
    assert queue.runs(future.task_id) == 1
    assert_task_gone(queue, future.task_id)
    # Both workers are alive and idle after the loss, and still serve tasks.
    assert queue.manager.queue_task(core_tasks.echo, "next") == "next"
    assert queue.runs(future.task_id) == 1


def test_released_task_runs_first(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-released-first", lease_timeout=LEASE)
    queue.start(workers=1)
    victim = queue.manager.queue_task_async(core_tasks.hold, "victim")
    first = queue.next_event()
    waiting = [
        queue.manager.queue_task_with_priority_async(core_tasks.record, "high-1"),
        queue.manager.queue_task_with_priority_async(core_tasks.record, "high-2"),
        queue.manager.queue_task_async(core_tasks.record, "normal-1"),
    ]
    assert queue.manager.flush(timeout=10)

    os.kill(queue.worker_pid(first["worker_id"]), signal.SIGKILL)

    assert victim.result(timeout=10)["run"] == 2
    assert [future.result(timeout=10) for future in waiting] == [
        "high-1",
        "high-2",
        "normal-1",
    ]
    # The released task goes to the front of the high-priority queue, ahead
    # of high-priority tasks that were already waiting.
    started = [event["label"] for event in queue.remaining_events()]
    assert started == ["victim", "high-1", "high-2", "normal-1"]


def test_repeated_crashes_dead_letter(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-poison", lease_timeout=LEASE, max_crashes=1)
    queue.start(workers=1)
    # The task holds on every run, so each run can be killed mid-task.
    future = queue.manager.queue_task_async(core_tasks.hold, "poison", 10)

    first = queue.next_event()
    os.kill(queue.worker_pid(first["worker_id"]), signal.SIGKILL)
    second = queue.next_event()
    assert second["attempt"] == 2
    os.kill(queue.worker_pid(second["worker_id"]), signal.SIGKILL)

    with pytest.raises(TaskDeadLettered) as raised:
        future.result(timeout=10)
    assert "max_crashes (1)" in raised.value.remote_message
    assert queue.runs(future.task_id) == 2
    assert queue.manager.stats().dead_letter_tasks == 1
    assert_task_gone(queue, future.task_id)


# SIGKILL of the whole supervisor process group


def test_kill_group_then_new_supervisor(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-group", lease_timeout=LEASE)
    first_supervisor = queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.hold, "group")
    first = queue.next_event()

    first_supervisor.kill_group()
    # No process released the task, so it stays leased until the lease expires.
    lease_deadline = queue.redis.zscore(queue.keys.inflight, future.task_id)
    assert lease_deadline is not None
    queue.start(workers=1)

    assert future.result(timeout=15) == {"label": "group", "run": 2, "attempt": 2}
    second = queue.next_event()
    assert second["worker_id"] != first["worker_id"]
    assert second["server_ms"] >= lease_deadline
    assert_task_gone(queue, future.task_id)


def test_kill_group_once_task_lost(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="kill-group-once", lease_timeout=LEASE)
    first_supervisor = queue.start(workers=1)
    future = queue.manager.queue_task_once_async(core_tasks.hold, "group-once")
    queue.next_event()

    first_supervisor.kill_group()
    queue.start(workers=1)

    with pytest.raises(TaskLost):
        future.result(timeout=15)
    assert queue.runs(future.task_id) == 1
    assert_task_gone(queue, future.task_id)


def test_long_task_runs_once(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="long-task", lease_timeout=LEASE)
    queue.start(workers=2)
    queue.wait_for_workers(2)

    # The task runs for 3.5 lease periods, and only heartbeats keep the idle
    # second worker from taking it over.
    future = queue.manager.queue_task_async(core_tasks.work, "long", 3.5 * LEASE)

    assert future.result(timeout=15) == 1
    assert queue.next_event()["run"] == 1
    assert queue.remaining_events() == []
    assert queue.manager.stats().completed_tasks == 1


def test_restart_without_resource_keeps_other_workers(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="restart-create", lease_timeout=LEASE)
    # The two first resources are created; every later one fails.
    supervisor = queue.start(workers=2, env={"CORE_FAIL_CREATE_AFTER": "2"})
    victim_pid = next(iter(queue.wait_for_workers(2).values()))

    os.kill(victim_pid, signal.SIGKILL)
    wait_until(lambda: supervisor.log().count("could not create its resource") >= 2)

    # The other worker still runs tasks, and the supervisor keeps trying.
    future = queue.manager.queue_task_async(core_tasks.echo, "still")
    assert future.result(timeout=10) == "still"
    assert supervisor.process.poll() is None
    assert "stopping all workers" not in supervisor.log()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 0


# SIGTERM of the supervisor


def test_sigterm_finishes_running_task(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="sigterm", lease_timeout=LEASE)
    supervisor = queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.hold, "graceful")
    event = queue.next_event()

    supervisor.signal(signal.SIGTERM)
    assert queue.next_sigterm() == event["pid"]
    # A task queued after the stop request stays queued for other workers.
    left = queue.manager.queue_task_async(core_tasks.echo, "left")
    assert queue.manager.flush(timeout=10)
    queue.open_gate("graceful")

    assert future.result(timeout=10) == {"label": "graceful", "run": 1, "attempt": 1}
    assert supervisor.wait(timeout=20) == 0
    assert queue.counter(core_tasks.DESTROYED) == 1
    assert queue.worker_ids() == []
    assert queue.redis.lrange(queue.keys.normal, 0, -1) == [left.task_id.encode()]
    assert queue.runs(future.task_id) == 1


def test_second_sigterm_releases_task(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="sigterm-twice", lease_timeout=LEASE)
    supervisor = queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.hold, "forced")
    event = queue.next_event()

    supervisor.signal(signal.SIGTERM)
    assert queue.next_sigterm() == event["pid"]
    supervisor.signal(signal.SIGTERM)

    assert supervisor.wait(timeout=10) == 143
    assert not process_alive(event["pid"])
    # The worker was killed, so on_destroy never ran.
    assert queue.counter(core_tasks.DESTROYED) == 0
    high = queue.redis.lrange(queue.keys.high, 0, -1)
    assert high == [future.task_id.encode()]
    assert not future.done()

    queue.start(workers=1)
    result = future.result(timeout=10)
    assert result["run"] == 2
    assert queue.next_event()["worker_id"] != event["worker_id"]


def test_second_sigterm_fails_once_task(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="sigterm-twice-once", lease_timeout=LEASE)
    supervisor = queue.start(workers=1)
    future = queue.manager.queue_task_once_async(core_tasks.hold, "forced-once")
    event = queue.next_event()

    supervisor.signal(signal.SIGTERM)
    assert queue.next_sigterm() == event["pid"]
    supervisor.signal(signal.SIGTERM)

    # No worker is left, so the supervisor itself records the loss.
    with pytest.raises(TaskLost):
        future.result(timeout=10)
    assert supervisor.wait(timeout=10) == 143
    assert queue.runs(future.task_id) == 1
    assert_task_gone(queue, future.task_id)


def test_sigterm_long_task_runs_once(make_queue: MakeQueue) -> None:
    # A stopping worker keeps extending the lease of the task it finishes, so
    # the other worker must not take it over.
    queue = make_queue(queue="sigterm-long", lease_timeout=LEASE)
    stopping = queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.work, "long", 3.5 * LEASE)
    event = queue.next_event()
    # A second supervisor whose worker would take the task over if its lease
    # expired.
    queue.start(workers=1)
    queue.wait_for_workers(2)

    stopping.signal(signal.SIGTERM)
    assert queue.next_sigterm() == event["pid"]

    assert future.result(timeout=15) == 1
    assert queue.runs(future.task_id) == 1
    assert stopping.wait(timeout=10) == 0


def test_sigterm_long_once_task_completes(make_queue: MakeQueue) -> None:
    # Without the lease extension the other worker would record it as lost.
    queue = make_queue(queue="sigterm-long-once", lease_timeout=LEASE)
    stopping = queue.start(workers=1)
    future = queue.manager.queue_task_once_async(core_tasks.work, "long", 3.5 * LEASE)
    event = queue.next_event()
    queue.start(workers=1)
    queue.wait_for_workers(2)

    stopping.signal(signal.SIGTERM)
    assert queue.next_sigterm() == event["pid"]

    # The graceful stop lets the task finish, so it must not be failed as lost.
    assert future.result(timeout=15) == 1
    assert stopping.wait(timeout=10) == 0
