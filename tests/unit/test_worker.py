"""A Worker run in a thread against tasks queued by a TaskManager, on fakeredis.

Both share one fakeredis server. These tests check what one worker does with
each kind of task. Blocking waits, several workers competing for tasks and
worker processes that crash are covered by the end-to-end tests on a real
redis-server in tests/e2e.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from tasker_redis import serialization as ser
from tasker_redis.config import Config
from tasker_redis.context import TaskContext
from tasker_redis.errors import (
    MaxRetriesExceeded,
    SerializationError,
    TaskDeadLettered,
    TaskFailed,
    TaskNotRegistered,
    TaskTimeout,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.manager import TaskManager
from tasker_redis.registry import task
from tasker_redis.results import wait_for_result
from tasker_redis.scripts import QueueScripts
from tasker_redis.worker import (
    EXIT_OK,
    EXIT_RESOURCE_FAILED,
    EXIT_STARTUP_FAILED,
    Worker,
)
from tasker_redis.worker_process import WorkerThreads

# Seconds a test waits for a result or a stop before it fails.
WAIT_TIMEOUT = 10
QUEUE = "unit-worker"
# A port where nothing listens, so a client built from the URL by mistake
# fails at once instead of reaching a real server.
UNUSED_URL = "redis://127.0.0.1:1/0"


class Resources:
    """on_create and on_destroy hooks that record every call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: list[str] = []
        self.destroyed: list[str] = []
        self.fail_create = False

    def create(self) -> str:
        with self.lock:
            if self.fail_create:
                raise RuntimeError("cannot open the resource")
            resource = f"resource-{len(self.created) + 1}"
            self.created.append(resource)
            return resource

    def destroy(self, resource: str) -> None:
        with self.lock:
            self.destroyed.append(resource)


class BrokenResource(Exception):
    """Raised by tasks to make check_health judge the resource unhealthy."""


def judge_health(error: BaseException) -> bool:
    return not isinstance(error, BrokenResource)


@task(name="unit.worker.add")
def add(ctx: TaskContext, resource: str, a: int, b: int) -> int:
    return a + b


@task(name="unit.worker.fail")
def fail(ctx: TaskContext, resource: str, text: str) -> None:
    raise ValueError(text)


@task(name="unit.worker.describe")
def describe(ctx: TaskContext, resource: str) -> dict[str, Any]:
    return {
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "high_priority": ctx.high_priority,
        "queue": ctx.queue,
        "worker_id": ctx.worker_id,
        "resource": resource,
    }


@task(name="unit.worker.broken")
def broken(ctx: TaskContext, resource: str) -> None:
    raise BrokenResource(f"{resource} is broken")


@task(name="unit.worker.broken-once")
def broken_first_time(ctx: TaskContext, resource: str) -> dict[str, Any]:
    if ctx.attempt == 1:
        raise BrokenResource(f"{resource} is broken")
    return {"attempt": ctx.attempt, "resource": resource}


@task(name="unit.worker.return-set")
def return_set(ctx: TaskContext, resource: str) -> set[int]:
    return {1, 2}


@task(name="unit.worker.overrun", timeout=0.05)
def overrun(ctx: TaskContext, resource: str) -> None:
    # TaskContext.wait returns at the deadline, well before 30 s.
    ctx.wait(30)
    ctx.raise_if_cancelled()


@task(name="unit.worker.exit")
def exit_worker(ctx: TaskContext, resource: str) -> None:
    sys.exit(0)


# Workers that stop_self stops, by worker id.
STOPPABLE: dict[str, Worker] = {}


@task(name="unit.worker.stop-self")
def stop_self(ctx: TaskContext, resource: str) -> str:
    STOPPABLE[ctx.worker_id].request_stop()
    return ctx.task_id


@pytest.fixture
def resources() -> Resources:
    return Resources()


@pytest.fixture
def make_config(resources: Resources) -> Callable[..., Config]:
    def build(**overrides: Any) -> Config:
        settings: dict[str, Any] = {
            "on_create": resources.create,
            "on_destroy": resources.destroy,
            "redis_url": UNUSED_URL,
            "queue": QUEUE,
            "block_timeout": 0.05,
            "socket_timeout": 5.0,
            **overrides,
        }
        return Config(**settings)

    return build


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="unit-worker")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
def start_worker(
    connect: Callable[[], Any], executor: ThreadPoolExecutor
) -> Iterator[Callable[..., tuple[Worker, Future[int]]]]:
    """Return a function that runs a Worker in a thread, and stop every one after.

    run() runs in an executor, so its return value or exception stays in the
    returned future instead of escaping the thread.
    """
    workers: list[Worker] = []

    def start(config: Config, worker_id: str = "w1") -> tuple[Worker, Future[int]]:
        worker = Worker(config, worker_id, client=connect())
        workers.append(worker)
        return worker, executor.submit(worker.run)

    yield start
    for worker in workers:
        worker.request_stop()


@pytest.fixture
def manager(config: Config, connect: Callable[[], Any]) -> Iterator[TaskManager]:
    task_manager = TaskManager(config, client=connect())
    yield task_manager
    task_manager.stop(timeout=2)


def stop(worker: Worker, running: Future[int]) -> int:
    worker.request_stop()
    return running.result(timeout=WAIT_TIMEOUT)


# Results


def test_worker_completes_async_task(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)

    future = manager.queue_task_async(add, 2, 3)

    assert future.result(timeout=WAIT_TIMEOUT) == 5


def test_worker_completes_blocking_task(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)

    assert manager.queue_task(add, 20, 22) == 42


def test_worker_completes_blocking_task_after_script_flush(
    config: Config,
    manager: TaskManager,
    start_worker: Callable[..., Any],
    client: Any,
) -> None:
    start_worker(config)
    assert manager.queue_task(add, 1, 1) == 2

    # As after a Redis restart: the first send fails with NOSCRIPT, and the
    # manager queues the task again with the script loaded.
    client.script_flush()

    assert manager.queue_task(add, 2, 3) == 5
    assert manager.stats().completed_tasks == 2


def test_worker_completes_many_tasks(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)

    futures = manager.queue_many(add, [(index, 1) for index in range(50)])

    values = [future.result(timeout=WAIT_TIMEOUT) for future in futures]
    assert values == [index + 1 for index in range(50)]
    assert manager.stats().completed_tasks == 50


def test_worker_logs_each_task(
    config: Config,
    manager: TaskManager,
    start_worker: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tasker_redis.worker")
    worker, running = start_worker(config)
    futures = [manager.queue_task_async(add, index, 1) for index in range(3)]
    for future in futures:
        future.result(timeout=WAIT_TIMEOUT)

    assert stop(worker, running) == EXIT_OK
    for future in futures:
        assert f"task {future.task_id} unit.worker.add completed in" in caplog.text


def test_worker_logs_last_task_before_stop(
    config: Config,
    manager: TaskManager,
    start_worker: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The task stops its worker, so no wait for a next task follows it.
    caplog.set_level(logging.INFO, logger="tasker_redis.worker")
    worker, running = start_worker(config)
    STOPPABLE[worker.worker_id] = worker
    try:
        task_id = manager.queue_task(stop_self)
        code = running.result(timeout=WAIT_TIMEOUT)
    finally:
        del STOPPABLE[worker.worker_id]

    assert code == EXIT_OK
    assert f"task {task_id} unit.worker.stop-self completed in" in caplog.text


def test_worker_passes_context(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config, "w7")

    future = manager.queue_task_with_priority_async(describe)
    context = future.result(timeout=WAIT_TIMEOUT)

    assert context["task_id"] == future.task_id
    assert context["attempt"] == 1
    assert context["high_priority"] is True
    assert context["queue"] == QUEUE
    assert context["worker_id"] == "w7"
    assert context["resource"] == "resource-1"


def test_worker_failing_task_raises_failed(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)

    future = manager.queue_task_async(fail, "bad input")

    with pytest.raises(TaskFailed) as caught:
        future.result(timeout=WAIT_TIMEOUT)
    error = caught.value
    assert type(error) is TaskFailed
    assert error.task_id == future.task_id
    assert error.type_name == "builtins.ValueError"
    assert error.remote_message == "bad input"
    assert "raise ValueError(text)" in error.traceback
    assert str(error) == f"task {future.task_id} raised builtins.ValueError: bad input"


def test_worker_failure_counted(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)
    future = manager.queue_task_async(fail, "x")

    with pytest.raises(TaskFailed):
        future.result(timeout=WAIT_TIMEOUT)

    assert manager.stats().failed_tasks == 1


def test_worker_unserializable_result(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)

    future = manager.queue_task_async(return_set)

    with pytest.raises(SerializationError) as caught:
        future.result(timeout=WAIT_TIMEOUT)
    assert "cannot encode the result of task" in caught.value.remote_message
    assert "use None, bool, int, float, str, bytes" in caught.value.remote_message


def test_worker_task_timeout(
    config: Config, manager: TaskManager, start_worker: Callable[..., Any]
) -> None:
    start_worker(config)

    future = manager.queue_task_async(overrun)

    with pytest.raises(TaskTimeout) as caught:
        future.result(timeout=WAIT_TIMEOUT)
    assert "timed out after 0.05 s" in caught.value.remote_message


# Tasks that cannot run


def test_worker_unknown_name_not_registered(
    config: Config,
    manager: TaskManager,
    start_worker: Callable[..., Any],
    client: Any,
) -> None:
    start_worker(config)

    future = manager.queue_task_async("unit.worker.nowhere")

    with pytest.raises(TaskNotRegistered) as caught:
        future.result(timeout=WAIT_TIMEOUT)
    assert "'unit.worker.nowhere' is not registered" in caught.value.remote_message
    assert client.llen(QueueKeys(QUEUE).dead) == 1


def test_worker_malformed_message_dead_lettered(
    config: Config,
    manager: TaskManager,
    start_worker: Callable[..., Any],
    client: Any,
) -> None:
    start_worker(config)
    QueueScripts(client, QueueKeys(QUEUE)).enqueue(
        [("raw-1", b"\xc1 not msgpack")], high_priority=False, once=False
    )

    with pytest.raises(TaskDeadLettered) as caught:
        manager.result("raw-1", timeout=WAIT_TIMEOUT)

    assert "malformed message" in str(caught.value)
    [entry] = client.lrange(QueueKeys(QUEUE).dead, 0, -1)
    assert ser.DeadLetter.decode(entry).message == b"\xc1 not msgpack"


def test_worker_survives_overflowing_message(
    config: Config,
    start_worker: Callable[..., Any],
    executor: ThreadPoolExecutor,
    connect: Callable[[], Any],
) -> None:
    # enqueued_at beyond the float range only feeds the queue-wait log, so
    # the worker must run the task rather than crash on OverflowError.
    _, running = start_worker(config)
    keys = QueueKeys(QUEUE)
    body = {
        "v": ser.MESSAGE_VERSION,
        "id": "raw-2",
        "task": "unit.worker.add",
        "args": [1, 2],
        "kwargs": {},
        "priority": False,
        "once": False,
        "enqueued_at": 2**1024,
    }
    QueueScripts(connect(), keys).enqueue(
        [("raw-2", ser.pack_value(body))], high_priority=False, once=False
    )
    stop_waiting = threading.Event()
    waiting = executor.submit(
        wait_for_result,
        connect(),
        keys,
        "raw-2",
        timeout=WAIT_TIMEOUT,
        block_timeout=0.05,
        should_stop=stop_waiting.is_set,
    )

    wait([waiting, running], timeout=WAIT_TIMEOUT, return_when=FIRST_COMPLETED)
    worker_error = running.exception(timeout=0) if running.done() else None
    stop_waiting.set()

    result = waiting.result(timeout=WAIT_TIMEOUT)
    assert worker_error is None
    assert running.done() is False
    assert result.ok is True
    assert result.value == 3


# Unhealthy resources


def test_worker_retries_unhealthy_then_fails(
    make_config: Callable[..., Config],
    resources: Resources,
    connect: Callable[[], Any],
    start_worker: Callable[..., Any],
) -> None:
    config = make_config(check_health=judge_health, max_retries=2)
    start_worker(config)
    with TaskManager(config, client=connect()) as task_manager:
        future = task_manager.queue_task_async(broken)

        with pytest.raises(MaxRetriesExceeded) as caught:
            future.result(timeout=WAIT_TIMEOUT)
        retried = task_manager.stats().retried_tasks

    assert "failed on an unhealthy resource 3 times" in caught.value.remote_message
    assert caught.value.type_name.endswith("BrokenResource")
    assert retried == 2
    assert resources.created == [f"resource-{n}" for n in range(1, 5)]
    assert resources.destroyed[:3] == ["resource-1", "resource-2", "resource-3"]


def test_worker_retry_succeeds_on_new_resource(
    make_config: Callable[..., Config],
    connect: Callable[[], Any],
    start_worker: Callable[..., Any],
) -> None:
    config = make_config(check_health=judge_health)
    start_worker(config)
    client = connect()
    keys = QueueKeys(QUEUE)
    with TaskManager(config, client=connect()) as task_manager:
        future = task_manager.queue_task_async(broken_first_time)
        value = future.result(timeout=WAIT_TIMEOUT)

    assert value == {"attempt": 2, "resource": "resource-2"}
    # The second run's claim read a retry count, which finish must clear.
    assert client.hexists(keys.retries, future.task_id) == 0
    assert client.hexists(keys.tasks, future.task_id) == 0


def test_worker_once_task_not_retried(
    make_config: Callable[..., Config],
    connect: Callable[[], Any],
    start_worker: Callable[..., Any],
) -> None:
    config = make_config(check_health=judge_health)
    start_worker(config)
    with TaskManager(config, client=connect()) as task_manager:
        future = task_manager.queue_task_once_async(broken_first_time)

        with pytest.raises(TaskFailed) as caught:
            future.result(timeout=WAIT_TIMEOUT)
        retried = task_manager.stats().retried_tasks

    assert "at-most-once task" in caught.value.remote_message
    assert "is not retried" in caught.value.remote_message
    assert retried == 0


def test_worker_healthy_failure_not_retried(
    make_config: Callable[..., Config],
    resources: Resources,
    connect: Callable[[], Any],
    start_worker: Callable[..., Any],
) -> None:
    config = make_config(check_health=judge_health)
    start_worker(config)
    with TaskManager(config, client=connect()) as task_manager:
        future = task_manager.queue_task_async(fail, "ordinary")

        with pytest.raises(TaskFailed):
            future.result(timeout=WAIT_TIMEOUT)

    assert resources.created == ["resource-1"]


# Start and stop


def test_worker_stop_returns_zero(
    config: Config, resources: Resources, start_worker: Callable[..., Any]
) -> None:
    worker, running = start_worker(config)

    code = stop(worker, running)

    assert code == EXIT_OK
    assert resources.created == ["resource-1"]
    assert resources.destroyed == ["resource-1"]


def test_worker_stop_deregisters(
    config: Config, start_worker: Callable[..., Any], client: Any
) -> None:
    worker, running = start_worker(config, "w3")
    keys = QueueKeys(QUEUE)

    stop(worker, running)

    assert client.zscore(keys.workers, "w3") is None
    assert client.exists(keys.worker_info("w3")) == 0


def test_worker_stop_after_tasks(
    config: Config,
    manager: TaskManager,
    resources: Resources,
    start_worker: Callable[..., Any],
) -> None:
    worker, running = start_worker(config)
    manager.queue_task_async(add, 1, 1).result(timeout=WAIT_TIMEOUT)

    code = stop(worker, running)

    assert code == EXIT_OK
    assert resources.destroyed == ["resource-1"]
    assert manager.stats().in_flight_tasks == 0


def test_worker_create_failure_exits(
    config: Config,
    resources: Resources,
    start_worker: Callable[..., Any],
    client: Any,
) -> None:
    resources.fail_create = True

    _, running = start_worker(config)

    assert running.result(timeout=WAIT_TIMEOUT) == EXIT_STARTUP_FAILED
    assert resources.destroyed == []
    assert client.exists(QueueKeys(QUEUE).workers) == 0


def test_worker_stop_leaves_queued_tasks(
    config: Config,
    manager: TaskManager,
    start_worker: Callable[..., Any],
) -> None:
    worker, running = start_worker(config)
    stop(worker, running)

    manager.queue_task_async(add, 1, 1)
    manager.flush(timeout=WAIT_TIMEOUT)
    queued = manager.stats().queued_tasks
    manager.kill()

    assert queued == 1


# Several Workers in the threads of one process


def test_worker_threads_stop_all_when_one_cannot_start(
    make_config: Callable[..., Config],
    resources: Resources,
    connect: Callable[[], Any],
    executor: ThreadPoolExecutor,
) -> None:
    calls = []

    def create() -> str:
        calls.append(None)
        if len(calls) == 2:
            raise RuntimeError("cannot open the second resource")
        return resources.create()

    config = make_config(on_create=create)
    group = WorkerThreads(
        [Worker(config, f"w{index}", client=connect()) for index in range(3)]
    )

    code = executor.submit(group.run).result(timeout=WAIT_TIMEOUT)

    assert code == EXIT_STARTUP_FAILED
    assert len(resources.created) == 2
    assert sorted(resources.destroyed) == sorted(resources.created)


def test_worker_threads_stop_all_when_a_task_exits(
    config: Config,
    manager: TaskManager,
    resources: Resources,
    connect: Callable[[], Any],
    executor: ThreadPoolExecutor,
) -> None:
    group = WorkerThreads(
        [Worker(config, f"w{index}", client=connect()) for index in range(2)]
    )
    running = executor.submit(group.run)

    manager.queue_task_async(exit_worker)

    assert running.result(timeout=WAIT_TIMEOUT) == EXIT_RESOURCE_FAILED
    assert sorted(resources.destroyed) == ["resource-1", "resource-2"]
    # The task is charged the crash and queued again at high priority.
    stats = manager.stats()
    assert (stats.priority_tasks, stats.in_flight_tasks) == (1, 0)
    assert all(worker.stopping for worker in group.workers)
