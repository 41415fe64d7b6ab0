"""End-to-end tests of priority, retries, results, callbacks and stats.

Each test runs real `tasker worker` processes against a private redis-server
and the tasks of apps.core_tasks, which report every run to Redis.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from apps import core_tasks
from apps.core_harness import CoreQueue, queue_factory
from helpers import wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

from tasker_redis import MaxRetriesExceeded, TaskFailed, TaskManager
from tasker_redis.keys import QueueKeys
from tasker_redis.scripts import QueueScripts

pytestmark = pytest.mark.e2e

MakeQueue = Callable[..., CoreQueue]

# Script that waits for one task id with its own TaskManager and prints
# repr(result).
WAIT_SCRIPT = """
import sys
from tasker_redis import Config, TaskManager
url, queue, task_id = sys.argv[1:4]
config = Config(
    on_create=dict, on_destroy=lambda resource: None, redis_url=url, queue=queue
)
manager = TaskManager(config)
print(repr(manager.result(task_id, timeout=30)), flush=True)
manager.kill()
"""


@pytest.fixture
def make_queue(
    redis_url: str, redis_client: redis.Redis, start_workers: Any
) -> Iterator[MakeQueue]:
    """Return a function that builds a CoreQueue with the given Config settings."""
    with queue_factory(redis_url, redis_client, start_workers) as make:
        yield make


def blocked_waiters(client: redis.Redis) -> int:
    """Return the number of clients blocked in BLMOVE, the command result() waits in."""
    clients = client.client_list()
    return sum(
        1 for entry in clients if entry["cmd"] == "blmove" and "b" in entry["flags"]
    )


# Priority


def test_priority_tasks_start_first(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="priority")
    queue.start(workers=1)
    busy = queue.manager.queue_task_async(core_tasks.hold, "busy")
    assert queue.next_event()["label"] == "busy"

    # Normal and high-priority tasks arrive interleaved while the only
    # worker is busy.
    order = [
        ("normal-1", False),
        ("normal-2", False),
        ("high-1", True),
        ("normal-3", False),
        ("high-2", True),
        ("normal-4", False),
        ("high-3", True),
        ("normal-5", False),
    ]
    futures = []
    for label, high_priority in order:
        if high_priority:
            futures.append(
                queue.manager.queue_task_with_priority_async(core_tasks.record, label)
            )
        else:
            futures.append(queue.manager.queue_task_async(core_tasks.record, label))
    assert queue.manager.flush(timeout=10)
    queue.open_gate("busy")

    assert busy.result(timeout=10)["run"] == 1
    results = [future.result(timeout=10) for future in futures]
    assert results == [label for label, _ in order]
    events = queue.remaining_events()
    started = [event["label"] for event in events]
    assert started == [
        "high-1",
        "high-2",
        "high-3",
        "normal-1",
        "normal-2",
        "normal-3",
        "normal-4",
        "normal-5",
    ]
    flags = [event["high_priority"] for event in events]
    assert flags == [True, True, True, False, False, False, False, False]


def test_priority_blocking_call_jumps_queue(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="priority-blocking")
    queue.start(workers=1)
    busy = queue.manager.queue_task_async(core_tasks.hold, "busy")
    assert queue.next_event()["label"] == "busy"
    backlog = [
        queue.manager.queue_task_async(core_tasks.record, f"normal-{index}")
        for index in range(3)
    ]
    assert queue.manager.flush(timeout=10)

    # A second producer thread blocks in queue_task_with_priority while the
    # backlog waits. It is queued after the backlog, but it must start first.
    outcome: list[Any] = []
    caller = threading.Thread(
        target=lambda: outcome.append(
            queue.manager.queue_task_with_priority(core_tasks.record, "urgent")
        ),
        daemon=True,
    )
    caller.start()
    wait_until(lambda: queue.redis.llen(queue.keys.high) == 1)
    queue.open_gate("busy")
    caller.join(timeout=10)

    assert busy.result(timeout=10)["run"] == 1
    assert outcome == ["urgent"]
    assert [future.result(timeout=10) for future in backlog] == [
        "normal-0",
        "normal-1",
        "normal-2",
    ]
    started = [event["label"] for event in queue.remaining_events()]
    assert started == ["urgent", "normal-0", "normal-1", "normal-2"]


# Health checks and retries


def test_unhealthy_failure_exhausts_retries(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="retries", max_retries=2)
    queue.start(workers=1)

    with pytest.raises(MaxRetriesExceeded) as raised:
        queue.manager.queue_task(core_tasks.break_resource, "broken")

    error = raised.value
    assert error.type_name == "apps.core_tasks.ResourceBroken"
    assert "max_retries (2)" in error.remote_message
    assert "raise ResourceBroken" in error.traceback
    events = queue.remaining_events()
    # Each attempt runs on a new resource, and retries come from the
    # high-priority queue.
    attempts = [
        (event["attempt"], event["high_priority"], event["serial"]) for event in events
    ]
    assert attempts == [(1, False, 1), (2, True, 2), (3, True, 3)]
    assert queue.counter(core_tasks.DESTROYED) == 3
    assert queue.counter(core_tasks.CREATED) == 4
    stats = queue.manager.stats()
    assert stats.retried_tasks == 2
    assert stats.failed_tasks == 1


def test_unhealthy_failure_then_success(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="retry-once", max_retries=3)
    queue.start(workers=1)

    value = queue.manager.queue_task(core_tasks.break_first_run, {"size": 3})

    assert value == [{"size": 3}, 2]
    serials = [event["serial"] for event in queue.remaining_events()]
    assert serials == [1, 2]
    assert queue.counter(core_tasks.DESTROYED) == 1
    assert queue.counter(core_tasks.CREATED) == 2
    stats = queue.manager.stats()
    assert stats.retried_tasks == 1
    assert stats.completed_tasks == 1


def test_healthy_failure_raises_at_once(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="healthy-failure", max_retries=3)
    queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.fail_with, "bad input 42")

    with pytest.raises(TaskFailed) as raised:
        future.result(timeout=10)

    error = raised.value
    assert error.task_id == future.task_id
    assert error.type_name == "builtins.ValueError"
    assert error.remote_message == "bad input 42"
    assert "Traceback (most recent call last)" in error.traceback
    assert "in fail_with" in error.traceback
    assert "ValueError: bad input 42" in error.traceback
    assert "bad input 42" in str(error)
    assert queue.runs(future.task_id) == 1
    assert queue.counter(core_tasks.DESTROYED) == 0
    assert queue.manager.stats().retried_tasks == 0


def test_once_task_never_retried(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="once-unhealthy", max_retries=3)
    queue.start(workers=1)
    future = queue.manager.queue_task_once_async(core_tasks.break_resource, "once")

    with pytest.raises(TaskFailed) as raised:
        future.result(timeout=10)

    assert raised.value.type_name == "apps.core_tasks.ResourceBroken"
    assert "not retried" in raised.value.remote_message
    assert queue.runs(future.task_id) == 1
    # The unhealthy resource is still replaced.
    assert queue.counter(core_tasks.DESTROYED) == 1
    assert queue.counter(core_tasks.CREATED) == 2
    assert queue.manager.stats().retried_tasks == 0


# Results


def test_result_shared_by_processes(make_queue: MakeQueue, redis_url: str) -> None:
    queue = make_queue(queue="shared-result")
    queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.hold, "shared")
    assert queue.next_event()["label"] == "shared"

    waiters = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WAIT_SCRIPT,
                redis_url,
                "shared-result",
                future.task_id,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    try:
        # Every waiter must block on the result key before the result exists.
        wait_until(lambda: blocked_waiters(queue.redis) == 3)
        queue.open_gate("shared")
        outputs = [waiter.communicate(timeout=30) for waiter in waiters]
    finally:
        for waiter in waiters:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()

    expected = {"label": "shared", "run": 1, "attempt": 1}
    assert future.result(timeout=10) == expected
    for waiter, (stdout, stderr) in zip(waiters, outputs, strict=True):
        assert waiter.returncode == 0, stderr.decode()
        assert ast.literal_eval(stdout.decode()) == expected


def test_result_shared_by_threads(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="shared-threads")
    queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.hold, "threads")
    assert queue.next_event()["label"] == "threads"

    results: list[Any] = []
    managers = [TaskManager(queue.config) for _ in range(3)]
    threads = [
        threading.Thread(
            target=lambda manager=manager: results.append(
                manager.result(future.task_id, timeout=30)
            ),
            daemon=True,
        )
        for manager in managers
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: blocked_waiters(queue.redis) == 3)
        queue.open_gate("threads")
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for manager in managers:
            manager.kill()

    expected = {"label": "threads", "run": 1, "attempt": 1}
    assert results == [expected, expected, expected]
    assert future.result(timeout=10) == expected


def test_result_unknown_id_times_out(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="unknown-id")
    started = time.monotonic()

    with pytest.raises(TimeoutError) as raised:
        queue.manager.result("no-such-task", timeout=0.3)

    assert type(raised.value) is TimeoutError
    assert "no-such-task" in str(raised.value)
    assert time.monotonic() - started >= 0.3


def test_result_pending_future_times_out(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="pending-id")
    queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.hold, "pending")
    assert queue.next_event()["label"] == "pending"

    # The manager has a future for this id, so result() waits on it.
    with pytest.raises(TimeoutError) as raised:
        queue.manager.result(future.task_id, timeout=0.3)

    assert type(raised.value) is TimeoutError
    queue.open_gate("pending")
    assert queue.manager.result(future.task_id, timeout=10)["run"] == 1


def test_result_key_ttl_from_config(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="result-ttl", result_ttl=60)
    queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.echo, "kept")

    assert future.result(timeout=10) == "kept"
    ttl_ms = queue.redis.pttl(queue.keys.result(future.task_id))
    assert ttl_ms > 50_000
    assert ttl_ms <= 60_000


def test_result_gone_after_ttl(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="result-expiry", result_ttl=0.5)
    queue.start(workers=1)
    future = queue.manager.queue_task_async(core_tasks.echo, "short-lived")
    assert future.result(timeout=10) == "short-lived"
    result_key = queue.keys.result(future.task_id)
    assert queue.redis.pttl(result_key) <= 500

    wait_until(lambda: not queue.redis.exists(result_key), timeout=5)

    with pytest.raises(TimeoutError):
        queue.manager.result(future.task_id, timeout=0.3)


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\xffraw bytes",
        "text, not bytes: \u00e9",
        "",
        b"",
        (1, "two", b"three"),
        ((1, 2), [3, (4,)]),
        [(1,), (2,)],
        {"key": (1, b"2"), "list": [b"x", "y"]},
        2**70,
    ],
    ids=[
        "bytes",
        "str",
        "empty-str",
        "empty-bytes",
        "tuple",
        "nested-tuple",
        "list-of-tuples",
        "dict",
        "big-int",
    ],
)
def test_result_types_round_trip(make_queue: MakeQueue, value: Any) -> None:
    queue = make_queue(queue="round-trip")
    queue.start(workers=1)

    result = queue.manager.queue_task(core_tasks.echo, value)

    assert result == value
    assert repr(result) == repr(value)


def test_argument_types_reach_worker(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="argument-types")
    queue.start(workers=1)
    values = [b"raw", "text", (1, 2), [1, 2], {"a": 1}, None, 1.5, True]

    futures = [
        queue.manager.queue_task_async(core_tasks.describe, value) for value in values
    ]

    names = [future.result(timeout=10) for future in futures]
    assert names == [
        "bytes",
        "str",
        "tuple",
        "list",
        "dict",
        "NoneType",
        "float",
        "bool",
    ]


# Queueing many tasks


def test_queue_many_results_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="queue-many")
    queue.start(workers=2)
    # More tasks than one enqueue script call takes, of mixed argument types.
    values: list[Any] = [*range(1_200), b"raw", (1, 2), {"a": [1, 2]}, None]

    futures = queue.manager.queue_many(core_tasks.echo, [(value,) for value in values])

    assert [future.result(timeout=60) for future in futures] == values


def test_enqueue_script_many_ids_in_one_call(redis_client: redis.Redis) -> None:
    # Redis 7.0's Lua rejects unpack() of 8000 values or more, so this
    # checks that the script splits its pushes on the real server.
    keys = QueueKeys("enqueue-many")
    scripts = QueueScripts(redis_client, keys)
    ids = [f"t{index}" for index in range(8_500)]

    queued = scripts.enqueue(
        [(task_id, b"message") for task_id in ids], high_priority=False, once=True
    )

    assert queued == 8_500
    assert [value.decode() for value in redis_client.lrange(keys.normal, 0, -1)] == (
        ids[::-1]
    )
    assert redis_client.hlen(keys.tasks) == 8_500
    assert redis_client.scard(keys.once) == 8_500
    assert redis_client.llen(keys.wake) == 8_500


def noscript_errors(client: redis.Redis) -> int:
    """Return how many NOSCRIPT error replies the server has sent."""
    stats = client.info("errorstats").get("errorstat_NOSCRIPT", {"count": 0})
    return int(stats["count"])


def test_enqueue_wait_loads_script_first(
    redis_client: redis.Redis,
) -> None:
    # The wait goes out with the script call: without the script, Redis
    # would reply NOSCRIPT and the wait would last its whole timeout.
    redis_client.script_flush()
    keys = QueueKeys("first-call")
    scripts = QueueScripts(redis_client, keys)

    data = scripts.enqueue_and_wait(
        "t1", b"message", high_priority=False, once=False, block_timeout=0.01
    )

    assert data is None
    assert redis_client.lrange(keys.normal, 0, -1) == [b"t1"]
    assert noscript_errors(redis_client) == 0


def test_enqueue_wait_reloads_script_on_resend(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 3))
    keys = QueueKeys("resend")
    scripts = QueueScripts(client, keys, keep_connections=True)
    try:
        scripts.enqueue_and_wait(
            "t1", b"message", high_priority=False, once=False, block_timeout=0.01
        )
        (connection_id,) = scripts.direct.execute((b"CLIENT", b"ID"))
        # As after a restart: the script cache is empty and the connection gone.
        redis_client.script_flush()
        redis_client.client_kill_filter(_id=connection_id)

        data = scripts.enqueue_and_wait(
            "t2", b"message", high_priority=False, once=False, block_timeout=0.01
        )
    finally:
        scripts.close()
        client.close()

    assert data is None
    assert redis_client.lrange(keys.normal, 0, -1) == [b"t2", b"t1"]
    assert noscript_errors(redis_client) == 0


# Callbacks

CALLBACK_VARIANTS = [
    ("queue_task_with_callback", [False, False]),
    ("queue_task_with_priority_with_callback", [True, False]),
    ("queue_task_once_with_callback", [False, True]),
    ("queue_task_with_priority_once_with_callback", [True, True]),
]


class CallbackRecorder:
    """A result callback that stores its call and lets a test wait for it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException | None]] = []
        self.called = threading.Event()

    def __call__(self, result: Any, error: BaseException | None) -> None:
        self.calls.append((result, error))
        self.called.set()


@pytest.mark.parametrize(
    ("method", "expected_flags"),
    CALLBACK_VARIANTS,
    ids=[method for method, _ in CALLBACK_VARIANTS],
)
def test_callback_receives_result(
    make_queue: MakeQueue, method: str, expected_flags: list[bool]
) -> None:
    queue = make_queue(queue="callbacks")
    queue.start(workers=1)
    callback = CallbackRecorder()

    future = getattr(queue.manager, method)(callback, core_tasks.flags, "callback")

    assert callback.called.wait(timeout=10)
    # The flags show that each variant queued with its priority and once flag.
    assert callback.calls == [(expected_flags, None)]
    assert future.result(timeout=1) == expected_flags


@pytest.mark.parametrize(
    "method",
    [method for method, _ in CALLBACK_VARIANTS],
)
def test_callback_receives_error(make_queue: MakeQueue, method: str) -> None:
    queue = make_queue(queue="callback-errors")
    queue.start(workers=1)
    callback = CallbackRecorder()

    getattr(queue.manager, method)(callback, core_tasks.fail_with, "callback failure")

    assert callback.called.wait(timeout=10)
    assert len(callback.calls) == 1
    result, error = callback.calls[0]
    assert result is None
    assert isinstance(error, TaskFailed)
    assert error.remote_message == "callback failure"


# Stats


def test_stats_reflect_queue_state(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="stats")
    empty = queue.manager.stats()
    assert empty.active_workers == 0
    queue.start(workers=2)
    alive = queue.wait_for_workers(2)
    assert queue.manager.stats().active_workers == len(alive)

    # Both workers are busy with a held task, so the other tasks stay queued.
    held_tasks = [
        queue.manager.queue_task_async(core_tasks.hold, label)
        for label in ("held-a", "held-b")
    ]
    started = {queue.next_event()["label"], queue.next_event()["label"]}
    assert started == {"held-a", "held-b"}
    normal = [
        queue.manager.queue_task_async(core_tasks.echo, index) for index in range(3)
    ]
    high = [
        queue.manager.queue_task_with_priority_async(core_tasks.echo, index)
        for index in range(2)
    ]
    assert queue.manager.flush(timeout=10)

    busy = queue.manager.stats()
    assert busy.queued_tasks == 3
    assert busy.priority_tasks == 2
    assert busy.in_flight_tasks == 2
    assert busy.active_workers == 2
    assert busy.completed_tasks == 0

    queue.open_gate("held-a")
    queue.open_gate("held-b")
    for future in [*held_tasks, *normal, *high]:
        future.result(timeout=10)

    done = queue.manager.stats()
    assert done.queued_tasks == 0
    assert done.priority_tasks == 0
    assert done.in_flight_tasks == 0
    assert done.completed_tasks == 7
    assert done.failed_tasks == 0


def test_stats_workers_after_graceful_stop(make_queue: MakeQueue) -> None:
    queue = make_queue(queue="stats-stop")
    worker = queue.start(workers=3)
    queue.wait_for_workers(3)
    assert queue.manager.stats().active_workers == 3

    worker.signal(signal.SIGTERM)

    assert worker.wait(timeout=20) == 0
    assert queue.manager.stats().active_workers == 0


def test_stats_workers_after_child_killed(make_queue: MakeQueue) -> None:
    # The supervisor drops a dead worker from the live set at once, without
    # waiting for its last heartbeat to age past lease_timeout.
    queue = make_queue(queue="stats-kill", lease_timeout=2.0)
    queue.start(workers=3)
    alive = queue.wait_for_workers(3)
    victim_id, victim_pid = next(iter(alive.items()))

    os.kill(victim_pid, signal.SIGKILL)
    # The supervisor starts a new worker in place of the killed one.
    wait_until(
        lambda: (
            victim_id not in queue.alive_workers() and len(queue.alive_workers()) == 3
        )
    )

    assert queue.manager.stats().active_workers == len(queue.alive_workers())


def test_manager_with_bounded_pool_client(
    make_queue: MakeQueue, redis_url: str
) -> None:
    # A caller's client with a small bounded pool: two threads wait for slow
    # tasks at once, and the manager's other calls still find connections.
    queue = make_queue()
    queue.start(threads=2)
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=2, timeout=5, socket_timeout=30
    )
    client = redis.Redis(connection_pool=pool)
    results: list[int] = []
    with TaskManager(queue.config, client=client) as manager:
        callers = [
            threading.Thread(
                target=lambda label=label: results.append(
                    manager.queue_task(core_tasks.work, label, 0.5)
                )
            )
            for label in ("a", "b")
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=10)
        completed = manager.stats().completed_tasks
    client.close()

    assert results == [1, 1]
    assert completed == 2
