"""Fixtures of the unit tests: in-process fakeredis servers and clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from tasker_redis.keys import QueueKeys
from tasker_redis.scripts import QueueScripts

# Version that FakeRedisWithInfo reports, and that check_server accepts.
FAKE_SERVER_VERSION = "7.4.0"


class FakeRedisWithInfo(fakeredis.FakeRedis):
    """A FakeRedis that replies to INFO, which TaskManager sends when it starts.

    fakeredis 2.41 rejects INFO as an unknown command, so TaskManager cannot
    check the server version on a plain FakeRedis.
    """

    def info(self, section: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"redis_version": FAKE_SERVER_VERSION}


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    """One in-memory Redis server that several clients of a test can share."""
    return fakeredis.FakeServer()


@pytest.fixture
def connect(
    fake_server: fakeredis.FakeServer,
) -> Iterator[Callable[[], FakeRedisWithInfo]]:
    """Return a function that opens another client of the test's fake server."""
    clients: list[FakeRedisWithInfo] = []

    def open_client() -> FakeRedisWithInfo:
        client = FakeRedisWithInfo(server=fake_server)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def client(connect: Callable[[], FakeRedisWithInfo]) -> FakeRedisWithInfo:
    """A client of the test's fake server."""
    return connect()


@pytest.fixture
def keys() -> QueueKeys:
    """Key names of the queue "q"."""
    return QueueKeys("q")


@pytest.fixture
def queue_scripts(client: FakeRedisWithInfo, keys: QueueKeys) -> QueueScripts:
    """The Lua scripts of queue "q", run by fakeredis through lupa."""
    return QueueScripts(client, keys)
