"""TaskManager.run_task against a real Redis server: local runs on pooled resources."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import redis
from apps import edge_local, edge_worker
from apps.edge_local import Resource, ResourceLog

from tasker_redis import (
    Config,
    MaxRetriesExceeded,
    ShuttingDownError,
    TaskManager,
    TaskNotRegistered,
)
from tasker_redis.keys import QueueKeys

pytestmark = pytest.mark.e2e

QUEUE = "edge-local"
KEYS = QueueKeys(QUEUE)

# Seconds a test waits for another thread or for a worker's result.
WAIT = 20

MakeManager = Callable[..., TaskManager]


@pytest.fixture
def resources() -> ResourceLog:
    """Hooks that record every resource the managers create and destroy."""
    return ResourceLog()


@pytest.fixture
def make_manager(redis_url: str, resources: ResourceLog) -> Iterator[MakeManager]:
    """Return a function that builds a TaskManager whose hooks record resources.

    The Config retries twice after ConnectionError and keeps one pooled
    resource. Keyword arguments override its fields. Every manager is
    killed after the test.
    """
    managers: list[TaskManager] = []

    def make(**overrides: Any) -> TaskManager:
        fields: dict[str, Any] = {
            "on_create": resources.create,
            "on_destroy": resources.destroy,
            "redis_url": redis_url,
            "queue": QUEUE,
            "check_health": edge_local.reject_connection_errors,
            "max_retries": 2,
            "resource_pool_size": 1,
        }
        fields.update(overrides)
        manager = TaskManager(Config(**fields))
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.kill()


StartHold = Callable[[TaskManager], tuple[Future[Any], threading.Event]]


@pytest.fixture
def start_hold() -> Iterator[StartHold]:
    """Return a function that starts a run_task call of `hold` in a thread.

    The function returns the call's future and the event that releases the
    task, once the task runs and its resource is out of the pool. Every call
    still held is released after the test.
    """
    releases: list[threading.Event] = []

    with ThreadPoolExecutor(max_workers=4) as pool:

        def start(manager: TaskManager) -> tuple[Future[Any], threading.Event]:
            started = threading.Event()
            release = threading.Event()
            releases.append(release)
            call = pool.submit(manager.run_task, edge_local.hold, started, release)
            assert started.wait(WAIT)
            return call, release

        try:
            yield start
        finally:
            for release in releases:
                release.set()


def test_run_task_runs_in_caller(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()

    pid, resource = manager.run_task(edge_local.where)

    assert pid == os.getpid()
    assert resources.created == [resource]


def test_run_task_by_name(make_manager: MakeManager) -> None:
    manager = make_manager()

    pid, _ = manager.run_task(edge_local.where.name)

    assert pid == os.getpid()


def test_run_task_leaves_redis_untouched(
    make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    manager = make_manager()

    manager.run_task(edge_local.where)

    assert redis_client.llen(KEYS.normal) == 0
    assert redis_client.llen(KEYS.high) == 0
    assert redis_client.hlen(KEYS.tasks) == 0
    assert redis_client.keys("*") == []


def test_run_task_reuses_pooled_resource(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()

    used = [manager.run_task(edge_local.where)[1] for _ in range(3)]

    assert len(resources.created) == 1
    assert used == [resources.created[0]] * 3
    assert resources.destroyed == []


def test_run_task_busy_pool_uses_temporary(
    start_hold: StartHold, make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager(resource_pool_size=1)
    holding, release = start_hold(manager)
    pooled = resources.created[0]

    _, temporary = manager.run_task(edge_local.where)

    assert temporary != pooled
    assert resources.created == [pooled, temporary]
    assert resources.destroyed == [temporary]
    release.set()
    assert holding.result(timeout=WAIT) == pooled
    assert manager.stats().available_resources == 1
    assert resources.destroyed == [temporary]


def test_run_task_pool_of_zero(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager(resource_pool_size=0)

    first = manager.run_task(edge_local.where)[1]
    second = manager.run_task(edge_local.where)[1]

    assert first != second
    assert resources.destroyed == [first, second]
    assert manager.stats().available_resources == 0


def test_stats_counts_idle_resources(
    start_hold: StartHold, make_manager: MakeManager
) -> None:
    manager = make_manager(resource_pool_size=2)
    assert manager.stats().available_resources == 0

    holding, release = start_hold(manager)
    assert manager.stats().available_resources == 0

    manager.run_task(edge_local.where)
    assert manager.stats().available_resources == 1

    release.set()
    holding.result(timeout=WAIT)
    assert manager.stats().available_resources == 2


def test_unhealthy_failure_retries_new_resource(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()
    seen: list[tuple[int, Resource]] = []

    assert manager.run_task(edge_local.fail_first_attempt, seen) == "done"

    attempts = [attempt for attempt, _ in seen]
    used = [resource for _, resource in seen]
    assert attempts == [1, 2]
    assert used == resources.created
    assert used[0] != used[1]
    assert resources.destroyed == [used[0]]
    assert manager.stats().available_resources == 1


def test_unhealthy_failures_exceed_max_retries(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager(max_retries=2)
    seen: list[tuple[int, Resource]] = []

    with pytest.raises(MaxRetriesExceeded) as caught:
        manager.run_task(edge_local.fail_unhealthy, seen)

    attempts = [attempt for attempt, _ in seen]
    used = [resource for _, resource in seen]
    assert attempts == [1, 2, 3]
    assert len(set(used)) == 3
    assert resources.created == used
    assert resources.destroyed == used
    assert manager.stats().available_resources == 0
    assert f"task {edge_local.fail_unhealthy.name!r} failed 3 times" in str(
        caught.value
    )
    assert isinstance(caught.value.__cause__, edge_local.UnhealthyError)


def test_zero_max_retries_runs_once(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager(max_retries=0)
    seen: list[tuple[int, Resource]] = []

    with pytest.raises(MaxRetriesExceeded):
        manager.run_task(edge_local.fail_unhealthy, seen)

    assert len(seen) == 1
    assert len(resources.destroyed) == 1


def test_healthy_failure_reraises_task_error(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()

    with pytest.raises(ValueError, match="bad input") as caught:
        manager.run_task(edge_local.fail_healthy, "bad input")

    assert caught.type is ValueError
    assert len(resources.created) == 1
    assert resources.destroyed == []
    assert manager.stats().available_resources == 1


def test_no_health_check_reraises(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager(check_health=None)
    seen: list[tuple[int, Resource]] = []

    with pytest.raises(edge_local.UnhealthyError):
        manager.run_task(edge_local.fail_unhealthy, seen)

    assert len(seen) == 1
    assert resources.destroyed == []


def test_create_failure_keeps_pool_capacity(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager(resource_pool_size=1)
    resources.failing_creates = 1

    with pytest.raises(RuntimeError, match=edge_local.CREATE_FAILURE):
        manager.run_task(edge_local.where)
    resource = manager.run_task(edge_local.where)[1]

    assert resources.created == [resource]
    assert resources.destroyed == []
    assert manager.stats().available_resources == 1


def test_raising_health_check_means_unhealthy(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    def broken_check(error: BaseException) -> bool:
        raise RuntimeError("check_health failed")

    manager = make_manager(check_health=broken_check, max_retries=1)

    with pytest.raises(MaxRetriesExceeded):
        manager.run_task(edge_local.fail_healthy, "bad input")

    assert len(resources.created) == 2
    assert resources.destroyed == resources.created


def test_run_task_wrong_arguments(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()

    with pytest.raises(TypeError, match="invalid arguments for task"):
        manager.run_task(edge_local.where, 1)

    assert resources.created == []


def test_run_task_unregistered_name(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()

    with pytest.raises(TaskNotRegistered) as caught:
        manager.run_task("apps.edge_local:missing")

    assert "task 'apps.edge_local:missing' is not registered" in str(caught.value)
    assert caught.value.task_name == "apps.edge_local:missing"
    assert resources.created == []


def test_queue_only_manager_creates_nothing(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    resources: ResourceLog,
) -> None:
    start_workers("apps.edge_worker:config", env={"EDGE_QUEUE": QUEUE})
    manager = make_manager()

    assert manager.queue_task(edge_worker.echo, 3) == 3
    assert manager.queue_task_async(edge_worker.add, 1, 2).result(WAIT) == 3
    assert manager.stats().available_resources == 0
    manager.stop()

    assert resources.created == []
    assert resources.destroyed == []


def test_stop_destroys_pool(make_manager: MakeManager, resources: ResourceLog) -> None:
    manager = make_manager(resource_pool_size=2)
    manager.run_task(edge_local.where)

    manager.stop()

    assert resources.destroyed == resources.created
    with pytest.raises(ShuttingDownError):
        manager.run_task(edge_local.where)


def test_stop_destroys_busy_resource_later(
    start_hold: StartHold, make_manager: MakeManager, resources: ResourceLog
) -> None:
    manager = make_manager()
    holding, release = start_hold(manager)

    manager.stop()

    assert resources.destroyed == []
    release.set()
    assert holding.result(timeout=WAIT) == resources.created[0]
    assert resources.destroyed == resources.created


def test_kill_destroys_pool(make_manager: MakeManager, resources: ResourceLog) -> None:
    manager = make_manager()
    manager.run_task(edge_local.where)

    manager.kill()

    assert resources.destroyed == resources.created
    with pytest.raises(ShuttingDownError):
        manager.run_task(edge_local.where)


def test_context_exit_destroys_pool(
    make_manager: MakeManager, resources: ResourceLog
) -> None:
    with make_manager() as manager:
        manager.run_task(edge_local.where)
        assert resources.destroyed == []

    assert resources.destroyed == resources.created
    with pytest.raises(ShuttingDownError):
        manager.run_task(edge_local.where)
