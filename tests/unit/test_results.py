"""Errors, futures, the inbox listener and waits by task id in results.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import fakeredis
import pytest

from tasker_redis import serialization as ser
from tasker_redis.errors import (
    MaxRetriesExceeded,
    SerializationError,
    ShuttingDownError,
    TaskDeadLettered,
    TaskError,
    TaskFailed,
    TaskLost,
    TaskNotRegistered,
    TaskTimeout,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.results import (
    ResultListener,
    TaskFuture,
    error_from_result,
    unwrap,
    wait_for_result,
)

MAX_SIZE = 1 << 20
# Seconds a test waits for the listener thread before it fails.
DELIVERY_TIMEOUT = 10


def failed_result(kind: str, task_id: str = "id-1") -> ser.TaskResult:
    return ser.TaskResult(
        task_id,
        ok=False,
        error_kind=kind,
        error_type="builtins.ValueError",
        error_message="bad input",
        traceback="Traceback (most recent call last): ...",
        worker_id="w1",
    )


def encoded(result: ser.TaskResult) -> bytes:
    return result.encode(MAX_SIZE)


def ok_result(task_id: str, value: object) -> ser.TaskResult:
    return ser.TaskResult(task_id, ok=True, value=value, worker_id="w1")


# Errors from results


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [
        (ser.FAILED, TaskFailed),
        (ser.NOT_REGISTERED, TaskNotRegistered),
        (ser.MAX_RETRIES, MaxRetriesExceeded),
        (ser.LOST, TaskLost),
        (ser.DEAD_LETTERED, TaskDeadLettered),
        (ser.SERIALIZATION, SerializationError),
        (ser.TIMEOUT, TaskTimeout),
        ("unknown kind", TaskFailed),
    ],
)
def test_error_from_result_class(kind: str, error_class: type[TaskError]) -> None:
    error = error_from_result(failed_result(kind))

    assert type(error) is error_class
    assert error.task_id == "id-1"
    assert error.type_name == "builtins.ValueError"
    assert error.remote_message == "bad input"
    assert error.traceback == "Traceback (most recent call last): ..."


def test_error_from_failed_result_message() -> None:
    error = error_from_result(failed_result(ser.FAILED))

    assert str(error) == "task id-1 raised builtins.ValueError: bad input"


def test_error_from_other_result_message() -> None:
    error = error_from_result(failed_result(ser.LOST))

    assert str(error) == "bad input"


def test_unwrap_returns_value() -> None:
    assert unwrap(ok_result("id-1", [1, "two"])) == [1, "two"]


def test_unwrap_raises_error() -> None:
    with pytest.raises(MaxRetriesExceeded, match="bad input"):
        unwrap(failed_result(ser.MAX_RETRIES))


# TaskFuture


def test_future_timeout_raises_builtin() -> None:
    future = TaskFuture("id-1")

    with pytest.raises(TimeoutError) as caught:
        future.result(timeout=0.01)

    assert type(caught.value) is TimeoutError
    assert "waiting for task id-1" in str(caught.value)


def test_future_resolves_value() -> None:
    future = TaskFuture("id-1")

    future.resolve(ok_result("id-1", {"a": 1}))

    assert future.result(timeout=0) == {"a": 1}


def test_future_resolves_error() -> None:
    future = TaskFuture("id-1")

    future.resolve(failed_result(ser.DEAD_LETTERED))

    with pytest.raises(TaskDeadLettered):
        future.result(timeout=0)


def test_future_keeps_first_result() -> None:
    future = TaskFuture("id-1")

    future.resolve(ok_result("id-1", "first"))
    future.resolve(ok_result("id-1", "second"))

    assert future.result(timeout=0) == "first"


def test_future_resolve_after_cancel() -> None:
    future = TaskFuture("id-1")
    future.cancel()

    future.resolve(ok_result("id-1", "late"))

    assert future.cancelled() is True


# ResultListener


@pytest.fixture
def listener(client: fakeredis.FakeRedis, keys: QueueKeys) -> Iterator[ResultListener]:
    result_listener = ResultListener(client, keys, "manager-1", block_timeout=0.5)
    yield result_listener
    result_listener.stop(wait=True)


def test_listener_inbox_key(listener: ResultListener, keys: QueueKeys) -> None:
    assert listener.inbox == keys.inbox("manager-1")


def test_listener_delivers_value(
    listener: ResultListener, client: fakeredis.FakeRedis
) -> None:
    future = listener.register("id-1")

    client.rpush(listener.inbox, encoded(ok_result("id-1", 42)))

    assert future.result(timeout=DELIVERY_TIMEOUT) == 42


def test_listener_delivers_error(
    listener: ResultListener, client: fakeredis.FakeRedis
) -> None:
    future = listener.register("id-1")

    client.rpush(listener.inbox, encoded(failed_result(ser.FAILED)))

    with pytest.raises(TaskFailed) as caught:
        future.result(timeout=DELIVERY_TIMEOUT)
    assert caught.value.remote_message == "bad input"


def test_listener_delivers_batch(
    listener: ResultListener, client: fakeredis.FakeRedis
) -> None:
    futures = [listener.register(f"id-{index}") for index in range(5)]

    client.rpush(
        listener.inbox,
        *[encoded(ok_result(f"id-{index}", index)) for index in range(5)],
    )

    assert [future.result(timeout=DELIVERY_TIMEOUT) for future in futures] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_listener_ignores_unknown_and_empty(
    listener: ResultListener,
    client: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    future = listener.register("id-1")

    with caplog.at_level(logging.WARNING, logger="tasker_redis.results"):
        client.rpush(listener.inbox, encoded(ok_result("someone-else", 1)))
        client.rpush(listener.inbox, b"")
        client.rpush(listener.inbox, encoded(ok_result("id-1", "mine")))
        value = future.result(timeout=DELIVERY_TIMEOUT)

    assert value == "mine"
    assert listener.get("someone-else") is None
    assert caplog.records == []


def test_listener_skips_undecodable_entry(
    listener: ResultListener,
    client: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    future = listener.register("id-1")

    with caplog.at_level(logging.ERROR, logger="tasker_redis.results"):
        client.rpush(listener.inbox, b"\xc1 not msgpack")
        client.rpush(listener.inbox, encoded(ok_result("id-1", "after")))
        value = future.result(timeout=DELIVERY_TIMEOUT)

    assert value == "after"
    assert "skipped an undecodable entry in inbox" in caplog.text


def test_listener_forgets_done_future(
    listener: ResultListener, client: fakeredis.FakeRedis
) -> None:
    future = listener.register("id-1")
    # Done callbacks run in the order they were added, so once this one has
    # run, the listener's own callback has removed the future.
    callbacks_ran = threading.Event()
    future.add_done_callback(lambda done: callbacks_ran.set())

    client.rpush(listener.inbox, encoded(ok_result("id-1", 1)))

    assert callbacks_ran.wait(DELIVERY_TIMEOUT) is True
    assert listener.get("id-1") is None
    assert listener.pending() == []


def test_listener_pending_lists_waiting(listener: ResultListener) -> None:
    first = listener.register("id-1")
    second = listener.register("id-2")

    assert listener.get("id-1") is first
    assert set(listener.pending()) == {first, second}


def test_listener_register_many_in_order(
    listener: ResultListener, client: fakeredis.FakeRedis
) -> None:
    futures = listener.register_many(["id-1", "id-2", "id-3"])

    client.rpush(
        listener.inbox,
        encoded(ok_result("id-3", 3)),
        encoded(ok_result("id-1", 1)),
        encoded(ok_result("id-2", 2)),
    )

    assert [future.task_id for future in futures] == ["id-1", "id-2", "id-3"]
    assert listener.get("id-2") is futures[1]
    assert [future.result(timeout=DELIVERY_TIMEOUT) for future in futures] == [
        1,
        2,
        3,
    ]
    assert listener.pending() == []


def test_listener_fail_all_sets_error(listener: ResultListener) -> None:
    future = listener.register("id-1")

    listener.fail_all(TaskLost("manager stopped"))

    with pytest.raises(TaskLost, match="manager stopped"):
        future.result(timeout=0)


def test_listener_reads_result_keys(
    listener: ResultListener, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    # After a reconnect the listener reads result keys in case the inbox was
    # lost; this calls that step directly instead of breaking a connection.
    future = listener.register("id-1")
    client.rpush(keys.result("id-1"), encoded(ok_result("id-1", "from key")))

    listener._read_result_keys()

    assert future.result(timeout=0) == "from key"
    assert client.llen(keys.result("id-1")) == 1


def test_listener_stop_without_thread(client: fakeredis.FakeRedis) -> None:
    idle = ResultListener(client, QueueKeys("q"), "manager-2", block_timeout=0.5)

    idle.stop(wait=True)

    assert client.exists(idle.inbox) == 0


# wait_for_result


def test_wait_returns_existing_result(
    client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    client.rpush(keys.result("id-1"), encoded(ok_result("id-1", "done")))

    result = wait_for_result(client, keys, "id-1", timeout=5, block_timeout=0.5)

    assert result.ok is True
    assert result.value == "done"


def test_wait_keeps_result_for_others(
    client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    client.rpush(keys.result("id-1"), encoded(ok_result("id-1", "shared")))

    first = wait_for_result(client, keys, "id-1", timeout=5, block_timeout=0.5)
    second = wait_for_result(client, keys, "id-1", timeout=5, block_timeout=0.5)

    assert first.value == "shared"
    assert second.value == "shared"
    assert client.llen(keys.result("id-1")) == 1


def test_wait_returns_failed_result(
    client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    client.rpush(keys.result("id-1"), encoded(failed_result(ser.LOST)))

    result = wait_for_result(client, keys, "id-1", timeout=5, block_timeout=0.5)

    assert result.ok is False
    assert result.error_kind == ser.LOST


def test_wait_times_out(client: fakeredis.FakeRedis, keys: QueueKeys) -> None:
    with pytest.raises(TimeoutError) as caught:
        wait_for_result(client, keys, "id-1", timeout=0.1, block_timeout=0.05)

    assert type(caught.value) is TimeoutError
    assert "timed out after 0.1 s waiting for task id-1" in str(caught.value)


def test_wait_zero_timeout(client: fakeredis.FakeRedis, keys: QueueKeys) -> None:
    with pytest.raises(TimeoutError):
        wait_for_result(client, keys, "id-1", timeout=0, block_timeout=0.5)


def test_wait_stops_on_request(client: fakeredis.FakeRedis, keys: QueueKeys) -> None:
    with pytest.raises(ShuttingDownError):
        wait_for_result(
            client,
            keys,
            "id-1",
            timeout=None,
            block_timeout=0.5,
            should_stop=lambda: True,
        )
