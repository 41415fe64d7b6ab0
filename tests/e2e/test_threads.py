"""End-to-end tests of worker processes that run several threads.

Each thread of a `tasker worker --threads N` process claims tasks under its
own worker id, with its own resource. The tasks of apps.core_tasks report
every run to Redis and wait on gates, so the tests see how many run at once.
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

from tasker_redis import TaskDeadLettered, TaskTimeout

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


def test_threads_run_tasks_at_once_with_own_resources(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="threads", lease_timeout=LEASE)
    queue.start(workers=1, threads=3)
    workers = queue.wait_for_workers(3)
    assert len(set(workers.values())) == 1

    gated = [queue.manager.queue_task_async(core_tasks.hold, f"t{i}") for i in range(3)]
    # All three start before any gate opens, so they run at the same time.
    events = [queue.next_event() for _ in range(3)]
    assert {event["pid"] for event in events} == set(workers.values())
    assert {event["worker_id"] for event in events} == set(workers)
    assert len({event["serial"] for event in events}) == 3

    # A fourth task waits for a free thread.
    waiting = queue.manager.queue_task_async(core_tasks.record, "fourth")
    assert queue.manager.flush(timeout=10)
    assert queue.manager.stats().queued_tasks == 1
    assert queue.manager.stats().in_flight_tasks == 3

    queue.open_gate("t1")
    assert gated[1].result(timeout=10) == {"label": "t1", "run": 1, "attempt": 1}
    assert waiting.result(timeout=10) == "fourth"
    queue.open_gate("t0")
    queue.open_gate("t2")
    assert gated[0].result(timeout=10)["label"] == "t0"
    assert gated[2].result(timeout=10)["label"] == "t2"
    assert queue.counter(core_tasks.CREATED) == 3


def test_sigterm_lets_every_thread_finish(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="threads-sigterm", lease_timeout=LEASE)
    supervisor = queue.start(workers=1, threads=3)
    gated = [queue.manager.queue_task_async(core_tasks.hold, f"s{i}") for i in range(3)]
    pids = {queue.next_event()["pid"] for _ in range(3)}

    supervisor.signal(signal.SIGTERM)
    assert {queue.next_sigterm()} == pids
    for index in range(3):
        queue.open_gate(f"s{index}")

    for index, future in enumerate(gated):
        assert future.result(timeout=10) == {
            "label": f"s{index}",
            "run": 1,
            "attempt": 1,
        }
    assert supervisor.wait(timeout=20) == 0
    assert queue.counter(core_tasks.DESTROYED) == 3
    assert queue.worker_ids() == []


def test_killed_process_releases_the_task_of_every_thread(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(queue="threads-kill", lease_timeout=LEASE)
    supervisor = queue.start(workers=1, threads=2)
    gated = [queue.manager.queue_task_async(core_tasks.hold, f"k{i}") for i in range(2)]
    first = [queue.next_event() for _ in range(2)]
    victim = first[0]["pid"]
    assert first[1]["pid"] == victim

    os.kill(victim, signal.SIGKILL)

    # Both tasks run again in the new process. The dead process cannot
    # report which task killed it, so each is charged the crash.
    for index, future in enumerate(gated):
        assert future.result(timeout=10) == {
            "label": f"k{index}",
            "run": 2,
            "attempt": 2,
        }
    again = [queue.next_event() for _ in range(2)]
    assert {event["pid"] for event in again} != {victim}
    assert not process_alive(victim)
    assert "each is charged a crash and runs alone next" in supervisor.log()


def test_sys_exit_in_one_thread_restarts_the_process(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="threads-exit", lease_timeout=LEASE, max_crashes=0)
    supervisor = queue.start(workers=1, threads=2)
    gated = queue.manager.queue_task_async(core_tasks.hold, "beside")
    first = queue.next_event()

    exiting = queue.manager.queue_task_async(core_tasks.exit_worker, "exit")
    with pytest.raises(TaskDeadLettered):
        exiting.result(timeout=10)
    # The other thread stops after its task, then the process exits.
    queue.open_gate("beside")
    assert gated.result(timeout=10) == {"label": "beside", "run": 1, "attempt": 1}
    wait_until(lambda: not process_alive(first["pid"]))

    assert queue.manager.queue_task(core_tasks.record, "after") == "after"
    events = queue.remaining_events()
    assert events[-1]["label"] == "after"
    assert events[-1]["pid"] != first["pid"]
    log = supervisor.log()
    assert (
        f"task {exiting.task_id} apps.core_tasks:exit_worker raised SystemExit(3)"
        in log
    )
    assert "ended with SystemExit; stopping this process" in log


def test_timeout_kill_puts_back_the_other_threads_task(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="threads-timeout", lease_timeout=LEASE)
    supervisor = queue.start(workers=1, threads=2)
    beside = queue.manager.queue_task_async(core_tasks.hold, "beside")
    first = queue.next_event()

    with pytest.raises(TaskTimeout):
        queue.manager.queue_task(core_tasks.spin, "spinner")

    # The task beside it was interrupted, not at fault: it runs again on a
    # new process with no crash charged, and its second run is not gated.
    assert beside.result(timeout=10) == {"label": "beside", "run": 2, "attempt": 1}
    assert not process_alive(first["pid"])
    log = supervisor.log()
    assert "ran past its timeout" in log
    assert f"tasks {beside.task_id}, interrupted in the other threads" in log


def test_task_charged_a_crash_runs_alone(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="threads-alone", lease_timeout=LEASE, max_crashes=1)
    supervisor = queue.start(workers=1, threads=3)
    working = [
        queue.manager.queue_task_async(core_tasks.work, label, 1.5)
        for label in ("a", "b")
    ]
    for _ in range(2):
        queue.next_event()

    # The process dies while a and b sleep, so each of the three is charged a
    # crash. Run again side by side, the killer would take a and b down with
    # it once more, past max_crashes; each runs alone instead.
    killer = queue.manager.queue_task_async(core_tasks.kill_process, "killer")

    with pytest.raises(TaskDeadLettered):
        killer.result(timeout=30)
    assert [future.result(timeout=30) for future in working] == [2, 2]
    reruns = {
        event["label"]: event["server_ms"]
        for event in queue.remaining_events()
        if event["run"] == 2
    }
    assert set(reruns) == {"a", "b", "killer"}
    # The second of a and b started after the first one's 1.5 s of sleep.
    assert abs(reruns["a"] - reruns["b"]) >= 1400
    # Run alone, the killer is the one task named at its second crash.
    assert f"while running task {killer.task_id}, which is" in supervisor.log()
