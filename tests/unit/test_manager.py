"""TaskManager on fakeredis: queue_many's messages, futures and checks, and the
resends after a connection error."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis

from tasker_redis import manager as manager_module
from tasker_redis import sender as sender_module
from tasker_redis import serialization as ser
from tasker_redis.config import Config
from tasker_redis.connection import Backoff
from tasker_redis.context import TaskContext
from tasker_redis.errors import (
    RedisUnavailableError,
    SerializationError,
    ShuttingDownError,
)
from tasker_redis.manager import TaskManager
from tasker_redis.registry import task

# Seconds a test waits for the result listener before it fails.
DELIVERY_TIMEOUT = 10


@task(name="unit.manager.add")
def add(context: TaskContext, resource: str, first: int, second: int = 0) -> int:
    return first + second


@pytest.fixture
def manager_of(
    client: fakeredis.FakeRedis,
) -> Iterator[Callable[..., TaskManager]]:
    """Return a function that builds a TaskManager of queue "q" on the fake server."""
    managers: list[TaskManager] = []

    def build(**overrides: Any) -> TaskManager:
        config = Config(
            on_create=lambda: "resource",
            on_destroy=lambda resource: None,
            redis_url="redis://127.0.0.1:1/0",
            queue="q",
            **overrides,
        )
        built = TaskManager(config, client=client)
        managers.append(built)
        return built

    yield build
    for built in managers:
        built.kill()


@pytest.fixture
def manager(manager_of: Callable[..., TaskManager]) -> TaskManager:
    return manager_of()


def stored_messages(
    client: fakeredis.FakeRedis, manager: TaskManager
) -> dict[str, ser.TaskMessage]:
    """Return every message in the tasks hash, decoded, by task id."""
    return {
        task_id.decode(): ser.TaskMessage.decode(data)
        for task_id, data in client.hgetall(manager.keys.tasks).items()
    }


def queued_ids(client: fakeredis.FakeRedis, key: str) -> list[str]:
    """Return the ids of a queue list in the order workers pop them."""
    return [value.decode() for value in client.lrange(key, 0, -1)][::-1]


def test_queue_many_stores_messages(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    before = time.time()

    futures = manager.queue_many(add, [(1,), (2, 3), [4, 5]])

    task_ids = [future.task_id for future in futures]
    messages = stored_messages(client, manager)
    assert queued_ids(client, manager.keys.normal) == task_ids
    assert sorted(messages) == sorted(task_ids)
    assert [messages[task_id].args for task_id in task_ids] == [(1,), (2, 3), (4, 5)]
    for task_id in task_ids:
        message = messages[task_id]
        assert message.task_id == task_id
        assert message.name == "unit.manager.add"
        assert message.kwargs == {}
        assert message.priority is False
        assert message.once is False
        assert message.reply_to == manager._listener.inbox
        assert before <= message.enqueued_at <= time.time()
        assert message.timeout is None
    assert client.llen(manager.keys.wake) == 3


def test_queue_many_high_priority_once(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    futures = manager.queue_many(add, [(1,), (2,)], high_priority=True, once=True)

    task_ids = [future.task_id for future in futures]
    messages = stored_messages(client, manager)
    assert queued_ids(client, manager.keys.high) == task_ids
    assert client.exists(manager.keys.normal) == 0
    assert client.smembers(manager.keys.once) == {
        task_id.encode() for task_id in task_ids
    }
    assert all(messages[task_id].priority for task_id in task_ids)
    assert all(messages[task_id].once for task_id in task_ids)


def test_queue_many_ids_unique_across_batches(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    futures = manager.queue_many(add, [(index,) for index in range(1_200)])

    task_ids = [future.task_id for future in futures]
    assert len(set(task_ids)) == 1_200
    assert all(re.fullmatch("[0-9a-f]{32}", task_id) for task_id in task_ids)
    assert client.hlen(manager.keys.tasks) == 1_200
    assert queued_ids(client, manager.keys.normal) == task_ids


def test_queue_many_futures_receive_results(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    futures = manager.queue_many(add, [(1,), (2,), (3,)])

    for future, value in zip(futures, ["one", "two", "three"], strict=True):
        result = ser.TaskResult(future.task_id, ok=True, value=value)
        client.rpush(manager._listener.inbox, result.encode(1 << 20))

    values = [future.result(timeout=DELIVERY_TIMEOUT) for future in futures]
    assert values == ["one", "two", "three"]


def test_queue_many_by_unregistered_name(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    (future,) = manager.queue_many("unit.manager.elsewhere", [("any", "shape", 3)])

    message = stored_messages(client, manager)[future.task_id]
    assert message.name == "unit.manager.elsewhere"
    assert message.args == ("any", "shape", 3)


def test_queue_many_empty_queues_nothing(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    assert manager.queue_many(add, []) == []
    assert client.exists(manager.keys.tasks) == 0


def test_queue_many_bad_argument_queues_nothing(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    with pytest.raises(SerializationError) as caught:
        manager.queue_many(add, [(1,), (2, {3})])

    text = str(caught.value)
    assert "argument 1 of task 'unit.manager.add'" in text
    assert "cannot encode set value {3}" in text
    assert client.exists(manager.keys.tasks) == 0
    assert client.exists(manager.keys.normal) == 0


def test_queue_many_wrong_count_queues_nothing(
    manager: TaskManager, client: fakeredis.FakeRedis
) -> None:
    with pytest.raises(TypeError) as caught:
        manager.queue_many(add, [(1,), (1, 2, 3)])

    assert "invalid arguments for task 'unit.manager.add'" in str(caught.value)
    assert client.exists(manager.keys.tasks) == 0


def test_queue_many_oversized_queues_nothing(
    manager_of: Callable[..., TaskManager], client: fakeredis.FakeRedis
) -> None:
    manager = manager_of(max_payload_size=1024)

    with pytest.raises(SerializationError, match=r"max_payload_size \(1024\)"):
        manager.queue_many(add, [(1,), ("x" * 2000,)])

    assert client.exists(manager.keys.tasks) == 0


# Resends after a connection error


class FailingSend:
    """Wraps a QueueScripts method: fails `failures` times, then calls it."""

    def __init__(self, method: Callable[..., Any], failures: int) -> None:
        self.method = method
        self.failures = failures
        self.calls = 0
        self.called = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.called.set()
        if self.calls <= self.failures:
            raise redis.ConnectionError("Connection refused")
        return self.method(*args, **kwargs)


def test_queue_many_resends_until_queued(
    manager: TaskManager,
    client: fakeredis.FakeRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manager_module, "Backoff", lambda: Backoff(base=0.0))
    send = FailingSend(manager._scripts.enqueue_pipelined, failures=3)
    monkeypatch.setattr(manager._scripts, "enqueue_pipelined", send)

    futures = manager.queue_many(add, [(1, 2), (3, 4)])

    assert send.calls == 4
    task_ids = [future.task_id for future in futures]
    assert queued_ids(client, manager.keys.normal) == task_ids


def test_queue_many_gives_up_cancelling_futures(
    manager: TaskManager,
    client: fakeredis.FakeRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sender_module, "GIVE_UP_AFTER", 0.0)
    send = FailingSend(manager._scripts.enqueue_pipelined, failures=1)
    monkeypatch.setattr(manager._scripts, "enqueue_pipelined", send)

    with pytest.raises(RedisUnavailableError) as raised:
        manager.queue_many(add, [(1, 2), (3, 4)])

    assert raised.value.task_id == ""
    assert "could not queue 2 tasks ('unit.manager.add')" in str(raised.value)
    assert "may have queued some of them" in str(raised.value)
    assert client.exists(manager.keys.normal) == 0


def test_resend_gives_up_naming_task(
    manager: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender_module, "GIVE_UP_AFTER", 0.0)
    send = FailingSend(manager._scripts.enqueue, failures=1)

    with pytest.raises(RedisUnavailableError) as raised:
        manager._send_until_acknowledged(
            lambda: send([("t1", b"message")], high_priority=False, once=False),
            "task t1 ('unit.add')",
            first_sent=time.monotonic(),
            task_id="t1",
        )

    assert raised.value.task_id == "t1"
    assert "could not queue task t1 ('unit.add')" in str(raised.value)
    assert "if so, result('t1', timeout=...) returns its result" in str(raised.value)


@pytest.mark.parametrize(
    ("first_sent", "first_failure", "result_ttl", "deadline"),
    [
        (0.0, 10.0, 86_400.0, 40.0),
        (0.0, 600.0, 86_400.0, 630.0),
        (0.0, 10.0, 30.0, 15.0),
        (5.0, 5.0, 0.2, 5.1),
    ],
)
def test_resend_deadline_cases(
    first_sent: float, first_failure: float, result_ttl: float, deadline: float
) -> None:
    assert sender_module.resend_deadline(
        first_sent, first_failure, result_ttl
    ) == pytest.approx(deadline)


@pytest.mark.parametrize(
    ("result_ttl", "socket_timeout", "allowed"),
    [
        (86_400.0, 10.0, True),
        (141.0, 10.0, True),
        (140.0, 10.0, False),
        (100.0, 2.0, True),
        (0.2, 10.0, False),
    ],
)
def test_resends_allowed_cases(
    result_ttl: float, socket_timeout: float, allowed: bool
) -> None:
    config = Config(
        on_create=lambda: "resource",
        on_destroy=lambda resource: None,
        redis_url="redis://127.0.0.1:1/0",
        result_ttl=result_ttl,
        socket_timeout=socket_timeout,
    )

    assert sender_module.resends_allowed(config) is allowed


@pytest.mark.parametrize(
    ("result_ttl", "first_failure", "stop_at"),
    [(86_400.0, 10.0, 40.0), (200.0, 500.0, 105.0), (140.0, 10.0, 10.0)],
)
def test_stop_resending_at_cases(
    result_ttl: float, first_failure: float, stop_at: float
) -> None:
    config = Config(
        on_create=lambda: "resource",
        on_destroy=lambda resource: None,
        redis_url="redis://127.0.0.1:1/0",
        result_ttl=result_ttl,
    )

    # The first send was at 5.
    stopped = sender_module.stop_resending_at(config, 5.0, first_failure)

    assert stopped == pytest.approx(stop_at)


def test_short_result_ttl_stops_resends(
    manager_of: Callable[..., TaskManager],
    client: fakeredis.FakeRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A resend could find the result of a task that already ran expired.
    manager = manager_of(result_ttl=0.2)
    send = FailingSend(manager._scripts.enqueue_pipelined, failures=1)
    monkeypatch.setattr(manager._scripts, "enqueue_pipelined", send)

    with pytest.raises(RedisUnavailableError):
        manager.queue_many(add, [(1, 2)])

    assert send.calls == 1
    assert client.exists(manager.keys.normal) == 0


def test_async_give_up_names_task(
    manager_of: Callable[..., TaskManager], monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = manager_of(result_ttl=0.2)

    def reject_send(batch: Any) -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(manager._sender, "_send", reject_send)
    future = manager.queue_task_async(add, 1, 2)

    with pytest.raises(RedisUnavailableError) as raised:
        future.result(timeout=DELIVERY_TIMEOUT)

    assert raised.value.task_id == future.task_id


def test_resend_stops_on_kill(
    manager: TaskManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A minute between attempts, so only kill() can end the pause in time.
    monkeypatch.setattr(manager_module, "Backoff", lambda: Backoff(base=60.0))
    send = FailingSend(manager._scripts.enqueue_pipelined, failures=1_000)
    monkeypatch.setattr(manager._scripts, "enqueue_pipelined", send)
    raised: list[BaseException] = []

    def call() -> None:
        try:
            manager.queue_many(add, [(1, 2)])
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert send.called.wait(DELIVERY_TIMEOUT)
    manager.kill()
    caller.join(DELIVERY_TIMEOUT)

    assert not caller.is_alive()
    assert len(raised) == 1
    assert isinstance(raised[0], ShuttingDownError)
    assert send.calls == 1
