"""Burst scaling of `tasker worker` against a real Redis server."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apps import scaling_tasks
from helpers import wait_until

from tasker_redis import TaskManager

pytestmark = pytest.mark.e2e


@pytest.fixture
def manager(redis_url: str) -> Iterator[TaskManager]:
    manager = TaskManager(
        dataclasses.replace(scaling_tasks.config(), redis_url=redis_url)
    )
    yield manager
    manager.kill()


def test_burst_grows_to_max_then_shrinks(
    start_workers: Callable[..., Any], manager: TaskManager
) -> None:
    workers = start_workers("apps.scaling_tasks:config")
    wait_until(lambda: manager.stats().active_workers == 1)

    futures = manager.queue_many(scaling_tasks.slow, [(0.3,)] * 30)
    peak = 0

    def grew_to_max() -> bool:
        nonlocal peak
        peak = max(peak, manager.stats().active_workers)
        return peak == 3

    wait_until(grew_to_max, timeout=20)
    pids = {future.result(timeout=30) for future in futures}
    wait_until(lambda: manager.stats().active_workers == 1, timeout=20)
    # A retired worker leaves the live set before the supervisor logs it.
    wait_until(lambda: workers.log().count("retired") == 2, timeout=10)

    assert peak == 3
    assert len(pids) == 3
    assert workers.log().count("added a burst worker") == 2
    assert workers.log().count("retired") == 2


def test_burst_off_keeps_base_count(
    start_workers: Callable[..., Any], manager: TaskManager
) -> None:
    start_workers("apps.scaling_tasks:config", env={"SCALING_INTERVAL": "0"})
    wait_until(lambda: manager.stats().active_workers == 1)

    futures = manager.queue_many(scaling_tasks.slow, [(0.05,)] * 20)
    pids = {future.result(timeout=30) for future in futures}

    assert len(pids) == 1
    assert manager.stats().active_workers == 1
