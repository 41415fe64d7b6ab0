"""Fixtures of the fault-injection runs: task managers for apps.fault_tasks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apps import fault_tasks
from apps.fault_harness import MakeManager

from tasker_redis import TaskManager


@pytest.fixture
def make_manager(redis_url: str) -> Iterator[MakeManager]:
    """Return a function that creates a TaskManager for the queue of apps.fault_tasks.

    Its keyword arguments go to fault_tasks.make_config. Every manager it
    created is killed after the test, which fails the futures still waiting.
    """
    managers: list[TaskManager] = []

    def make(**settings: float) -> TaskManager:
        manager = TaskManager(fault_tasks.make_config(redis_url, **settings))
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.kill()
