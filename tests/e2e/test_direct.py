"""DirectConnections, behind the queue's hot calls, on a real Redis server."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
from helpers import wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

from tasker_redis.direct import DirectConnections

pytestmark = pytest.mark.e2e

# Seconds a test waits on a thread or a blocking command before failing.
WAIT = 10


@pytest.fixture
def direct_client(redis_url: str) -> Iterator[redis.Redis]:
    # No resends, as for a worker, so a lost connection raises.
    client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


@pytest.fixture
def direct(direct_client: redis.Redis) -> Iterator[DirectConnections]:
    lent = DirectConnections(direct_client, keep=True)
    yield lent
    lent.close()


def client_id(direct: DirectConnections) -> int:
    (reply,) = direct.execute((b"CLIENT", b"ID"))
    return int(reply)


def test_direct_replies_in_order(direct: DirectConnections) -> None:
    replies = direct.execute(
        (b"RPUSH", b"list", b"a"),
        (b"INCR", b"list"),
        (b"LRANGE", b"list", 0, -1),
    )

    assert replies[0] == 1
    assert isinstance(replies[1], redis.ResponseError)
    assert "WRONGTYPE" in str(replies[1])
    assert replies[2] == [b"a"]


def test_direct_packs_argument_types(direct: DirectConnections) -> None:
    replies = direct.execute(
        (b"RPUSH", b"mixed", b"\xff\x00", "\u00e9", 7, 0.25),
        (b"LRANGE", "mixed", 0, -1),
    )

    assert replies == [4, [b"\xff\x00", "\u00e9".encode(), b"7", b"0.25"]]


def test_direct_rejects_invalid_argument(
    direct: DirectConnections,
) -> None:
    with pytest.raises(redis.DataError, match=r"invalid argument \[None\] in a b'SET'"):
        direct.execute((b"SET", b"first", b"1"), (b"SET", b"second", None))

    # Neither command went out, and the connection still works.
    assert direct.execute((b"EXISTS", b"first", b"second")) == [0]


def test_direct_rejects_int_subclass(direct: DirectConnections) -> None:
    with pytest.raises(
        redis.DataError, match=r"invalid argument \[True\] in a b'ECHO'"
    ):
        direct.execute((b"ECHO", True))


def test_direct_setup_sent_when_asked(direct: DirectConnections) -> None:
    direct.execute((b"PING",))

    replies = direct.execute(
        (b"GET", b"key"), setup=(b"SET", b"key", b"from setup"), setup_first=True
    )

    assert replies == [b"from setup"]


def test_direct_setup_sent_on_new_connection(direct: DirectConnections) -> None:
    first = direct.execute((b"GET", b"key"), setup=(b"SET", b"key", b"one"))
    second = direct.execute((b"GET", b"key"), setup=(b"SET", b"key", b"two"))

    assert first == [b"one"]
    # The same connection again: no setup.
    assert second == [b"one"]


MakeDirect = Callable[..., DirectConnections]


@pytest.fixture
def make_direct(redis_url: str) -> Iterator[MakeDirect]:
    """Return a function that builds DirectConnections on a client of its own."""
    created: list[tuple[DirectConnections, redis.Redis]] = []

    def make(*, resends: int, keep: bool) -> DirectConnections:
        client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), resends))
        lent = DirectConnections(client, keep=keep)
        created.append((lent, client))
        return lent

    yield make
    for lent, client in created:
        lent.close()
        client.close()


def set_up_then_kill(direct: DirectConnections, admin: redis.Redis) -> int:
    """Make a call with a setup, kill its connection and return the connection id."""
    direct.execute((b"GET", b"key"), setup=(b"SET", b"key", b"one"))
    (connection_id,) = direct.execute((b"CLIENT", b"ID"))
    admin.client_kill_filter(_id=connection_id)
    return connection_id


def test_direct_setup_sent_on_resend(
    make_direct: MakeDirect, redis_client: redis.Redis
) -> None:
    direct = make_direct(resends=3, keep=True)
    set_up_then_kill(direct, redis_client)

    resent = direct.execute((b"GET", b"key"), setup=(b"SET", b"key", b"two"))

    assert resent == [b"two"]


def test_direct_setup_sent_after_pool_reconnects(
    make_direct: MakeDirect, redis_client: redis.Redis
) -> None:
    # Without keep, a call borrows from the caller's pool, which may reconnect
    # a dead connection before lending it, so no error reaches the call.
    direct = make_direct(resends=0, keep=False)
    connection_id = set_up_then_kill(direct, redis_client)
    wait_until(lambda: connection_id not in client_ids(redis_client))

    replies = direct.execute((b"GET", b"key"), setup=(b"SET", b"key", b"two"))
    (new_id,) = direct.execute((b"CLIENT", b"ID"))

    assert new_id != connection_id
    assert replies == [b"two"]


def test_direct_setup_sent_after_failed_call(
    make_direct: MakeDirect, redis_client: redis.Redis
) -> None:
    # No resends: the failed call's connection reconnects in the next send.
    direct = make_direct(resends=0, keep=True)
    set_up_then_kill(direct, redis_client)
    with pytest.raises(redis.ConnectionError):
        direct.execute((b"GET", b"key"))

    replies = direct.execute((b"GET", b"key"), setup=(b"SET", b"key", b"two"))

    assert replies == [b"two"]


def client_ids(client: redis.Redis) -> list[int]:
    return [int(entry["id"]) for entry in client.client_list()]


def test_direct_reuse_one_connection(direct: DirectConnections) -> None:
    first = client_id(direct)

    assert client_id(direct) == first
    assert client_id(direct) == first


def test_direct_lend_connection_once(
    direct: DirectConnections, redis_client: redis.Redis
) -> None:
    # A caller blocked in BLPOP keeps its connection, so another caller
    # meanwhile gets a second one.
    blocked_id = client_id(direct)
    replies: list[list[object]] = []
    waiter = threading.Thread(
        target=lambda: replies.append(
            direct.execute((b"CLIENT", b"ID"), (b"BLPOP", b"wake", WAIT))
        )
    )
    waiter.start()
    try:
        wait_until(lambda: redis_client.info("clients")["blocked_clients"] == 1)
        other_id = client_id(direct)
    finally:
        redis_client.rpush("wake", "token")
        waiter.join(timeout=WAIT)

    assert not waiter.is_alive()
    assert replies == [[blocked_id, [b"wake", b"token"]]]
    assert other_id != blocked_id


def test_direct_reconnect_after_connection_loss(
    direct: DirectConnections, redis_client: redis.Redis
) -> None:
    lost = client_id(direct)
    redis_client.client_kill_filter(_id=lost)

    with pytest.raises(redis.ConnectionError):
        direct.execute((b"CLIENT", b"ID"))
    restored = client_id(direct)

    assert restored != lost
    assert client_id(direct) == restored


def test_direct_close_returns_connection_to_pool(
    direct: DirectConnections, direct_client: redis.Redis
) -> None:
    lent = client_id(direct)

    direct.close()
    connection = direct_client.connection_pool.get_connection()
    try:
        connection.send_command("CLIENT", "ID")
        pooled = connection.read_response()
    finally:
        direct_client.connection_pool.release(connection)

    assert pooled == lent


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_direct_open_new_connection_after_fork(direct: DirectConnections) -> None:
    parent_id = client_id(direct)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, str(client_id(direct)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_id = int(pipe.read())
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert child_id != parent_id
    # The child left the parent's socket open and usable.
    assert client_id(direct) == parent_id


def test_direct_without_keep_shares_bounded_pool(redis_url: str) -> None:
    pool = redis.BlockingConnectionPool.from_url(
        redis_url, max_connections=1, timeout=2
    )
    client = redis.Redis(connection_pool=pool)
    direct = DirectConnections(client, keep=False)
    try:
        assert direct.execute((b"SET", b"key", b"value")) == [b"OK"]
        # The pool's only connection is free again for the client itself.
        assert client.get("key") == b"value"
        assert direct.execute((b"GET", b"key")) == [b"value"]
    finally:
        direct.close()
        client.close()


def test_direct_resends_after_connection_loss_when_retry_allows(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # tasker's producer client retries, so an idempotent call survives a
    # killed connection without an error.
    client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 3))
    direct = DirectConnections(client, keep=True)
    try:
        (first,) = direct.execute((b"CLIENT", b"ID"))
        redis_client.client_kill_filter(_id=first)
        (second,) = direct.execute((b"CLIENT", b"ID"))
    finally:
        direct.close()
        client.close()

    assert second != first
