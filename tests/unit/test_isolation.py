"""TaskGate: tasks side by side, and a task charged a crash alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from helpers import wait_until

from tasker_redis.isolation import TaskGate

WAIT_TIMEOUT = 10


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="unit-gate")
    yield pool
    pool.shutdown(wait=True)


def hold_gate(
    gate: TaskGate, *, alone: bool, release: threading.Event, entered: threading.Event
) -> None:
    """Enter the gate, report it, and stay inside until release is set."""
    with gate.enter(alone=alone):
        entered.set()
        assert release.wait(WAIT_TIMEOUT)


def start(
    executor: ThreadPoolExecutor, gate: TaskGate, *, alone: bool
) -> tuple[Future[None], threading.Event, threading.Event]:
    release, entered = threading.Event(), threading.Event()
    future = executor.submit(
        hold_gate, gate, alone=alone, release=release, entered=entered
    )
    return future, release, entered


def test_gate_lets_tasks_run_together(executor: ThreadPoolExecutor) -> None:
    gate = TaskGate()
    first = start(executor, gate, alone=False)
    second = start(executor, gate, alone=False)

    assert first[2].wait(WAIT_TIMEOUT)
    assert second[2].wait(WAIT_TIMEOUT)
    for future, release, _ in (first, second):
        release.set()
        future.result(timeout=WAIT_TIMEOUT)


def test_gate_alone_waits_for_running_and_goes_first(
    executor: ThreadPoolExecutor,
) -> None:
    gate = TaskGate()
    running, release_running, running_entered = start(executor, gate, alone=False)
    assert running_entered.wait(WAIT_TIMEOUT)

    suspect, release_suspect, suspect_entered = start(executor, gate, alone=True)
    wait_until(lambda: gate._waiting_alone == 1)
    newcomer, release_newcomer, newcomer_entered = start(executor, gate, alone=False)

    assert not suspect_entered.wait(0.2)
    release_running.set()
    running.result(timeout=WAIT_TIMEOUT)
    assert suspect_entered.wait(WAIT_TIMEOUT)
    assert not newcomer_entered.is_set()

    release_suspect.set()
    suspect.result(timeout=WAIT_TIMEOUT)
    assert newcomer_entered.wait(WAIT_TIMEOUT)
    release_newcomer.set()
    newcomer.result(timeout=WAIT_TIMEOUT)


def test_gate_alone_excludes_another_alone(executor: ThreadPoolExecutor) -> None:
    gate = TaskGate()
    first, release_first, first_entered = start(executor, gate, alone=True)
    assert first_entered.wait(WAIT_TIMEOUT)

    second, release_second, second_entered = start(executor, gate, alone=True)

    assert not second_entered.wait(0.2)
    release_first.set()
    first.result(timeout=WAIT_TIMEOUT)
    assert second_entered.wait(WAIT_TIMEOUT)
    release_second.set()
    second.result(timeout=WAIT_TIMEOUT)
