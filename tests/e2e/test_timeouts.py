"""Task timeouts enforced by a real `tasker worker`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apps import timeout_tasks
from helpers import wait_until

from tasker_redis import TaskManager, TaskTimeout

pytestmark = pytest.mark.e2e


@pytest.fixture
def manager(redis_url: str) -> Iterator[TaskManager]:
    manager = TaskManager(
        dataclasses.replace(timeout_tasks.config(), redis_url=redis_url)
    )
    yield manager
    manager.kill()


@pytest.fixture
def workers(start_workers: Callable[..., Any], manager: TaskManager) -> Any:
    started = start_workers("apps.timeout_tasks:config")
    wait_until(lambda: manager.stats().active_workers == 1)
    return started


def test_spinning_task_killed_near_deadline(workers: Any, manager: TaskManager) -> None:
    pid_before = manager.queue_task(timeout_tasks.pid)
    started = time.monotonic()

    with pytest.raises(TaskTimeout) as caught:
        manager.queue_task(timeout_tasks.spin)
    elapsed = time.monotonic() - started

    # Deadline 1 s, then 0.5 s of grace and up to 0.1 s until the check.
    assert 1.0 <= elapsed < 4.0
    assert "ran past its timeout" in str(caught.value)
    assert manager.queue_task(timeout_tasks.pid) != pid_before
    assert "killed" in workers.log()


def test_cooperative_task_stops_at_deadline(workers: Any, manager: TaskManager) -> None:
    pid_before = manager.queue_task(timeout_tasks.pid)
    started = time.monotonic()

    with pytest.raises(TaskTimeout) as caught:
        manager.queue_task(timeout_tasks.cooperative)
    elapsed = time.monotonic() - started

    assert 1.0 <= elapsed < 1.5
    assert "timed out after 1.0 s" in str(caught.value)
    assert manager.queue_task(timeout_tasks.pid) == pid_before


def test_per_call_timeout_overrides(workers: Any, manager: TaskManager) -> None:
    future = manager.submit(timeout_tasks.sleep, (5.0,), timeout=0.5)

    with pytest.raises(TaskTimeout):
        future.result(timeout=10)
    assert manager.submit(timeout_tasks.sleep, (0.01,), timeout=5).result(10) == 0.01
