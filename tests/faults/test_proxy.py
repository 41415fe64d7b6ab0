"""Tests of the fault-injecting TCP proxy in faults/proxy.py, against a real Redis."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import redis
from faults.proxy import TcpProxy
from helpers import wait_until

from tasker_redis.local_server import LocalRedisServer

PING = b"PING\r\n"
PONG = b"+PONG\r\n"


@pytest.fixture
def proxy(redis_server: LocalRedisServer) -> Iterator[TcpProxy]:
    with TcpProxy(redis_server.port) as running:
        yield running


def connect(proxy: TcpProxy, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def ping(sock: socket.socket) -> bytes:
    sock.sendall(PING)
    return sock.recv(64)


def new_connection_works(proxy: TcpProxy) -> bool:
    """Return True if a new connection replies to PING, False if it was reset."""
    try:
        with connect(proxy) as sock:
            return ping(sock) == PONG
    except (ConnectionResetError, BrokenPipeError):
        return False


def test_proxy_forwards_commands(proxy: TcpProxy) -> None:
    client = redis.Redis.from_url(proxy.url)
    # Larger than a socket buffer, so partial sends and reads are exercised.
    value = bytes(range(256)) * 16_384
    client.set("key", value)

    assert client.get("key") == value
    assert proxy.accepted == 1
    client.close()


def test_cut_closes_both_sides(proxy: TcpProxy, redis_client: redis.Redis) -> None:
    sock = connect(proxy)
    sock.sendall(b"CLIENT SETNAME proxied\r\n")
    assert sock.recv(64) == b"+OK\r\n"

    assert proxy.cut() == 1
    assert sock.recv(64) == b""
    wait_until(lambda: all(c["name"] != "proxied" for c in redis_client.client_list()))
    assert proxy.connection_count() == 0
    assert proxy.cut_count == 1
    sock.close()


def test_stall_holds_bytes(proxy: TcpProxy) -> None:
    sock = connect(proxy)
    assert ping(sock) == PONG

    started = time.monotonic()
    assert proxy.stall(0.6) == 1
    sock.sendall(PING)
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(64)

    # A connection opened during the stall is forwarded at once.
    other = connect(proxy)
    assert ping(other) == PONG

    sock.settimeout(5.0)
    assert sock.recv(64) == PONG
    assert time.monotonic() - started >= 0.6
    sock.close()
    other.close()


def test_reject_resets_new_connections(proxy: TcpProxy) -> None:
    existing = connect(proxy)
    proxy.reject(30.0)

    assert not new_connection_works(proxy)
    assert proxy.rejected == 1
    assert ping(existing) == PONG

    proxy.restore()
    assert new_connection_works(proxy)
    existing.close()


def test_rejection_ends_after_seconds(proxy: TcpProxy) -> None:
    started = time.monotonic()
    proxy.reject(0.5)

    wait_until(lambda: new_connection_works(proxy), timeout=10)
    assert time.monotonic() - started >= 0.5
    assert proxy.rejected >= 1


def test_stop_closes_everything(redis_server: LocalRedisServer) -> None:
    proxy = TcpProxy(redis_server.port)
    proxy.start()
    sock = connect(proxy)
    assert ping(sock) == PONG

    proxy.stop()
    assert sock.recv(64) == b""
    assert not proxy.alive
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.stop()
    sock.close()
