"""Edge cases against a real Redis server and real `tasker worker` processes.

Covers bad input from producers, malformed messages in Redis, an unreachable
server, Config validation, and TaskManager.stop(), kill() and context exit.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from apps import edge_worker
from helpers import wait_until

from tasker_redis import (
    Config,
    ConfigError,
    RedisUnavailableError,
    SerializationError,
    ShuttingDownError,
    TaskManager,
    TaskNotRegistered,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.local_server import LocalRedisServer, free_port
from tasker_redis.serialization import DeadLetter

pytestmark = pytest.mark.e2e

SPEC = "apps.edge_worker:config"
KEYS = QueueKeys(edge_worker.QUEUE)

# Seconds a test waits for a worker's result or for a list entry it pushes.
WAIT = 20

MakeManager = Callable[..., TaskManager]


@pytest.fixture
def make_manager(redis_url: str) -> Iterator[MakeManager]:
    """Return a function that builds a TaskManager on the edge queue.

    Keyword arguments override Config fields. Every manager is killed after
    the test, so none waits for results that will never arrive.
    """
    managers: list[TaskManager] = []

    def make(**overrides: Any) -> TaskManager:
        config = edge_worker.build_config(redis_url=redis_url, **overrides)
        manager = TaskManager(config)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.kill()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    """A thread pool for calls that block while the test acts.

    Tests request it before make_manager, so their managers are killed, which
    wakes blocked calls, before the pool waits for its threads.
    """
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[LocalRedisServer]:
    """A second private server that requires the password "secret"."""
    server = LocalRedisServer(
        tmp_path / "redis-password",
        appendonly=False,
        extra_args=["--requirepass", "secret"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


def assert_nothing_queued(client: redis.Redis) -> None:
    assert client.llen(KEYS.normal) == 0
    assert client.llen(KEYS.high) == 0
    assert client.hlen(KEYS.tasks) == 0
    assert client.llen(KEYS.wake) == 0


def rejects_new_tasks(manager: TaskManager) -> bool:
    """Return True once the manager raises ShuttingDownError for new tasks.

    The probe's argument cannot be encoded, so a running manager rejects it
    with SerializationError and queues nothing.
    """
    try:
        manager.queue_task_async(edge_worker.echo, object())
    except ShuttingDownError:
        return True
    except SerializationError:
        return False
    raise AssertionError("the probe task was queued")


def write_raw_task(client: redis.Redis, task_id: str | bytes, message: bytes) -> None:
    """Queue a message the way enqueue.lua does, bypassing the producer's checks."""
    client.hset(KEYS.tasks, task_id, message)
    client.lpush(KEYS.normal, task_id)
    client.lpush(KEYS.wake, "1")


def task_body(name: str, arguments: list[Any], **fields: Any) -> dict[str, Any]:
    """Return a well-formed message body for a task, with fields overridden."""
    body: dict[str, Any] = {
        "v": 1,
        "id": uuid.uuid4().hex,
        "task": name,
        "args": arguments,
        "kwargs": {},
        "priority": False,
        "once": False,
        "reply_to": None,
        "enqueued_at": time.time(),
    }
    body.update(fields)
    return body


# Producer input checks


@dataclass(frozen=True)
class Unencodable:
    """An argument value that msgpack cannot encode, and the type the error names."""

    value: Any
    type_name: str


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(Unencodable(object(), "object"), id="object"),
        pytest.param(Unencodable({1, 2}, "set"), id="set"),
        pytest.param(Unencodable(lambda: 1, "function"), id="lambda"),
        pytest.param(Unencodable([1, {2}], "set"), id="set-inside-list"),
    ],
)
@pytest.mark.parametrize("keyword", [False, True], ids=["positional", "keyword"])
@pytest.mark.parametrize("method", ["queue_task", "queue_task_async"])
def test_unencodable_argument_rejected(
    make_manager: MakeManager,
    redis_client: redis.Redis,
    method: str,
    keyword: bool,
    case: Unencodable,
) -> None:
    manager = make_manager()
    queue = getattr(manager, method)

    with pytest.raises(SerializationError) as caught:
        if keyword:
            queue(edge_worker.echo, value=case.value)
        else:
            queue(edge_worker.echo, case.value)

    message = str(caught.value)
    where = "keyword argument 'value'" if keyword else "argument 0"
    assert f"{where} of task {edge_worker.echo.name!r}" in message
    assert f"cannot encode {case.type_name} value" in message
    assert_nothing_queued(redis_client)


def test_unencodable_second_argument_named(
    make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    manager = make_manager()

    with pytest.raises(SerializationError) as caught:
        manager.queue_task(edge_worker.add, 1, {2})

    assert "argument 1 of task" in str(caught.value)
    assert_nothing_queued(redis_client)


def test_queue_many_unencodable_queues_none(
    make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    manager = make_manager()

    with pytest.raises(SerializationError) as caught:
        manager.queue_many(edge_worker.echo, [(1,), (2,), ({3},)])

    assert "argument 0 of task" in str(caught.value)
    assert_nothing_queued(redis_client)


def test_oversized_argument_names_limit(
    make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    manager = make_manager(max_payload_size=1024)

    with pytest.raises(SerializationError) as caught:
        manager.queue_task(edge_worker.echo, b"x" * 2048)

    assert "max_payload_size (1024)" in str(caught.value)
    assert_nothing_queued(redis_client)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((1,), {}, id="too-few"),
        pytest.param((1, 2, 3), {}, id="too-many"),
        pytest.param((1, 2), {"c": 3}, id="unknown-keyword"),
        pytest.param((1,), {"a": 2}, id="duplicate-keyword"),
    ],
)
@pytest.mark.parametrize("by_name", [False, True], ids=["by-task", "by-name"])
def test_wrong_arguments_rejected_in_producer(
    make_manager: MakeManager,
    redis_client: redis.Redis,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    by_name: bool,
) -> None:
    manager = make_manager()
    task = edge_worker.add.name if by_name else edge_worker.add

    with pytest.raises(TypeError) as caught:
        manager.queue_task_async(task, *args, **kwargs)

    assert f"invalid arguments for task {edge_worker.add.name!r}" in str(caught.value)
    assert_nothing_queued(redis_client)


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        pytest.param(
            "redis://127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0", id="plain"
        ),
        pytest.param(
            "redis://:secret@127.0.0.1:{port}/0",
            "redis://:***@127.0.0.1:{port}/0",
            id="password",
        ),
        pytest.param(
            "redis://admin:secret@127.0.0.1:{port}/0",
            "redis://admin:***@127.0.0.1:{port}/0",
            id="user-and-password",
        ),
    ],
)
def test_unreachable_redis_names_url(template: str, shown: str) -> None:
    port = free_port()
    config = edge_worker.build_config(redis_url=template.format(port=port))

    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)

    message = str(caught.value)
    assert shown.format(port=port) in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "credentials",
    [pytest.param(":wrong@", id="wrong-password"), pytest.param("", id="no-password")],
)
def test_rejected_password_names_credentials(
    password_server: LocalRedisServer, credentials: str
) -> None:
    url = f"redis://{credentials}127.0.0.1:{password_server.port}/0"
    config = edge_worker.build_config(redis_url=url)

    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)

    assert "rejected the credentials" in str(caught.value)
    assert "start a server there" not in str(caught.value)


# Worker-side failures


def test_unencodable_result_fails_task(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers(SPEC)
    manager = make_manager()
    pid_before = manager.queue_task(edge_worker.worker_pid)

    with pytest.raises(SerializationError) as caught:
        manager.queue_task(edge_worker.return_set)

    assert "cannot encode set value" in str(caught.value)
    assert caught.value.task_id != ""
    assert manager.queue_task(edge_worker.add, 2, 3) == 5
    assert manager.queue_task(edge_worker.worker_pid) == pid_before


def test_unencodable_result_fails_future(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers(SPEC)
    manager = make_manager()

    future = manager.queue_task_async(edge_worker.return_set)

    with pytest.raises(SerializationError):
        future.result(timeout=WAIT)
    assert manager.queue_task_async(edge_worker.echo, "next").result(WAIT) == "next"


def test_oversized_result_names_limit(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers(SPEC, env={"EDGE_MAX_PAYLOAD": "4096"})
    manager = make_manager()

    with pytest.raises(SerializationError) as caught:
        manager.queue_task(edge_worker.return_bytes, 10_000)

    assert "max_payload_size (4096)" in str(caught.value)
    # The hint on types is for results that cannot be encoded at all.
    assert "use None, bool" not in str(caught.value)
    assert manager.queue_task(edge_worker.echo, "small") == "small"


MALFORMED_MESSAGES = [
    pytest.param(
        b"\xc1" + random.Random(7).randbytes(63),
        "malformed message: not a valid msgpack message",
        id="random-bytes",
    ),
    pytest.param(
        msgpack.packb(["apps.edge_worker:echo", [1]]),
        "malformed message: message is a list, not a map",
        id="msgpack-list",
    ),
    pytest.param(
        msgpack.packb(task_body("apps.edge_worker:echo", [1], args="1")),
        "malformed message: field 'args' is missing or not a list",
        id="msgpack-wrong-field",
    ),
    pytest.param(
        msgpack.packb(task_body("apps.edge_worker:echo", [1], v=99)),
        "malformed message: unsupported message version 99",
        id="msgpack-wrong-version",
    ),
]


@pytest.mark.parametrize(("message", "reason"), MALFORMED_MESSAGES)
def test_malformed_message_dead_lettered(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
    message: bytes,
    reason: str,
) -> None:
    workers = start_workers(SPEC)
    manager = make_manager()
    pid_before = manager.queue_task(edge_worker.worker_pid)
    task_id = uuid.uuid4().hex

    write_raw_task(redis_client, task_id, message)
    wait_until(lambda: redis_client.llen(KEYS.dead) == 1)

    entry = DeadLetter.decode(redis_client.lindex(KEYS.dead, 0))
    assert entry.task_id == task_id
    assert entry.reason.startswith(reason)
    assert entry.message == message
    assert redis_client.hexists(KEYS.tasks, task_id) == 0
    assert manager.queue_task(edge_worker.worker_pid) == pid_before
    assert workers.process.poll() is None


def test_os_system_message_dead_lettered(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    start_workers(SPEC)
    manager = make_manager()
    pid_before = manager.queue_task(edge_worker.worker_pid)
    marker = tmp_path / "os-system-ran"
    body = task_body("os:system", [f"touch {marker}"])

    write_raw_task(redis_client, body["id"], msgpack.packb(body))
    wait_until(lambda: redis_client.llen(KEYS.dead) == 1)

    entry = DeadLetter.decode(redis_client.lindex(KEYS.dead, 0))
    assert entry.task_id == body["id"]
    assert "task 'os:system' is not registered" in entry.reason
    assert not marker.exists()
    assert manager.queue_task(edge_worker.worker_pid) == pid_before


def test_non_utf8_task_id_dead_lettered(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    workers = start_workers(SPEC)
    manager = make_manager()
    pid_before = manager.queue_task(edge_worker.worker_pid)
    task_id = b"\xff\xfe-not-utf-8"

    write_raw_task(redis_client, task_id, b"\xc1")
    wait_until(lambda: redis_client.llen(KEYS.dead) == 1, timeout=10)

    assert redis_client.hexists(KEYS.tasks, task_id) == 0
    assert manager.queue_task_async(edge_worker.worker_pid).result(WAIT) == pid_before
    assert workers.process.poll() is None


def test_unregistered_name_fails_caller(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers(SPEC)
    manager = make_manager()

    with pytest.raises(TaskNotRegistered) as caught:
        manager.queue_task("apps.edge_worker:missing", 1)

    assert "task 'apps.edge_worker:missing' is not registered" in str(caught.value)
    assert manager.queue_task(edge_worker.echo, "next") == "next"


def test_not_registered_error_carries_name(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers(SPEC)
    manager = make_manager()

    with pytest.raises(TaskNotRegistered) as caught:
        manager.queue_task("apps.edge_worker:missing")

    assert caught.value.task_name == "apps.edge_worker:missing"


# Config validation


def build(**fields: Any) -> Config:
    return Config(on_create=object, on_destroy=lambda resource: None, **fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"worker_count": 0},
            ["worker_count must be at least 1", "got 0"],
            id="zero-workers",
        ),
        pytest.param(
            {"result_ttl": -5.0},
            ["result_ttl must be greater than 0", "got -5.0"],
            id="negative-result-ttl",
        ),
        pytest.param(
            {"redis_url": "http://127.0.0.1:8080/0"},
            [
                "'http://127.0.0.1:8080/0'",
                "the scheme must be redis://, rediss:// or unix://",
            ],
            id="http-url",
        ),
        pytest.param(
            {"socket_timeout": 1.0, "block_timeout": 1.0},
            [
                "socket_timeout (1.0) must be greater than block_timeout (1.0)",
                "raise socket_timeout or lower block_timeout",
            ],
            id="socket-timeout-equal",
        ),
        pytest.param(
            {"socket_timeout": 0.5, "block_timeout": 2.0},
            [
                "socket_timeout (0.5) must be greater than block_timeout (2.0)",
                "raise socket_timeout or lower block_timeout",
            ],
            id="socket-timeout-lower",
        ),
        pytest.param(
            {"queue": "my queue"},
            ["invalid queue name 'my queue'", "use 1 to 64 letters, digits"],
            id="queue-with-space",
        ),
    ],
)
def test_config_rejects_invalid_value(
    fields: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build(**fields)

    for fragment in expected:
        assert fragment in str(caught.value)


def test_config_bad_scheme_masks_password() -> None:
    with pytest.raises(ConfigError) as caught:
        build(redis_url="http://user:secret@127.0.0.1:8080/0")

    assert "http://user:***@127.0.0.1:8080/0" in str(caught.value)
    assert "secret" not in str(caught.value)


# Shutdown


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.queue_task(edge_worker.echo, 1), id="queue_task"),
        pytest.param(
            lambda m: m.queue_task_async(edge_worker.echo, 1), id="queue_task_async"
        ),
        pytest.param(
            lambda m: m.queue_task_with_priority_once(edge_worker.echo, 1),
            id="queue_task_with_priority_once",
        ),
        pytest.param(lambda m: m.queue_many(edge_worker.echo, [(1,)]), id="queue_many"),
        pytest.param(lambda m: m.run_task(edge_worker.echo, 1), id="run_task"),
    ],
)
def test_stop_rejects_new_tasks(
    make_manager: MakeManager,
    redis_client: redis.Redis,
    call: Callable[[TaskManager], object],
) -> None:
    manager = make_manager()
    manager.stop()

    with pytest.raises(ShuttingDownError):
        call(manager)
    assert_nothing_queued(redis_client)


def test_stop_waits_for_futures(
    executor: ThreadPoolExecutor,
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    start_workers(SPEC)
    manager = make_manager()
    future = manager.queue_task_async(
        edge_worker.block_until_released, "edge:started", "edge:release"
    )
    assert redis_client.blpop(["edge:started"], timeout=WAIT) is not None

    stopping = executor.submit(manager.stop)
    wait_until(lambda: rejects_new_tasks(manager))

    assert not stopping.done()
    assert not future.done()
    redis_client.rpush("edge:release", "go")
    stopping.result(timeout=WAIT)
    assert future.done()
    assert future.result() == "go"


def test_kill_wakes_waiting_callers(
    executor: ThreadPoolExecutor,
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    manager = make_manager()
    blocked = executor.submit(manager.queue_task, edge_worker.push, "edge:out", "sync")
    # The blocking call must send its task first. Otherwise it finds the async
    # task in the sender's buffer and waits on a future instead of Redis.
    wait_until(lambda: redis_client.llen(KEYS.normal) == 1)
    future = manager.queue_task_async(edge_worker.push, "edge:out", "async")
    assert manager.flush(timeout=WAIT)

    # kill() must not wait for the tasks, which no worker runs yet.
    executor.submit(manager.kill).result(timeout=5)

    with pytest.raises(ShuttingDownError):
        blocked.result(timeout=WAIT)
    with pytest.raises(ShuttingDownError):
        future.result(timeout=WAIT)
    assert redis_client.llen(KEYS.normal) == 2
    assert redis_client.hlen(KEYS.tasks) == 2

    start_workers(SPEC)
    first = redis_client.blpop(["edge:out"], timeout=WAIT)
    second = redis_client.blpop(["edge:out"], timeout=WAIT)
    assert first is not None
    assert second is not None
    assert {first[1], second[1]} == {b"sync", b"async"}


def test_kill_wakes_result_waiter(
    executor: ThreadPoolExecutor,
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    producer = make_manager()
    future = producer.queue_task_async(edge_worker.echo, 1)
    producer.flush()
    waiter = make_manager()
    waiting = executor.submit(waiter.result, future.task_id)

    executor.submit(waiter.kill).result(timeout=5)

    with pytest.raises(ShuttingDownError):
        waiting.result(timeout=WAIT)
    assert redis_client.hexists(KEYS.tasks, future.task_id) == 1


def test_context_exit_calls_stop(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers(SPEC)

    with make_manager() as manager:
        future = manager.queue_task_async(edge_worker.echo, 7)

    assert future.done()
    assert future.result() == 7
    with pytest.raises(ShuttingDownError):
        manager.queue_task(edge_worker.echo, 1)
