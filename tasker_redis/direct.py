"""Connections used without redis-py's command layer, for every task's hot calls.

For each command, redis-py's client checks the process id, polls the socket
for stray data and updates pool counters, and a pipeline adds an object of
its own. That is about 25 us per call on a 2-core virtual machine, as much as
Redis spends running one of the queue's scripts. The hot calls (enqueue and
wait, claim, finish) instead borrow a connection here, send their commands in
one write and read the replies. hiredis packs the commands, because
redis-py's packing around it cost about 7 us more per command in a timeit
measurement here.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import hiredis
import redis
from redis.connection import Connection


class DirectConnections:
    """Connections of a client's pool, each lent to one caller at a time.

    With keep, a connection is taken from the client's pool when none of
    those taken before is free, and kept until close(). So there are never
    more connections than callers that once ran at the same time. Without
    keep, each call takes a connection from the pool and gives it back,
    which respects a caller's bounded pool at about 15 us more per call.
    Safe to share between threads. After a fork the child opens its own
    connections.

    Each connection gets a connect callback, so that a call can tell a
    connection opened since its last use here, which may lead to a server
    that lacks what the call's setup command prepares.
    """

    def __init__(self, client: redis.Redis, *, keep: bool) -> None:
        self._pool = client.connection_pool
        self._keep = keep
        self._free: list[Connection] = []
        self._from_pool: set[Connection] = set()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        # Connections that have this object's connect callback, and those
        # of them opened since their last call here.
        self._watched: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._opened: weakref.WeakSet[Connection] = weakref.WeakSet()

    def execute(
        self,
        *commands: tuple[Any, ...],
        setup: tuple[Any, ...] | None = None,
        setup_first: bool = False,
    ) -> list[Any]:
        """Send commands in one write and return their replies in order.

        An error reply (redis.ResponseError, NoScriptError among them) is
        returned in its place, not raised, so that every reply is read.
        After a connection error the commands are sent again as the client's
        retry policy allows, so callers must pass commands that are safe to
        run twice, or a client that never resends.

        Args:
            commands: The commands, each a tuple of its name and arguments.
            setup: A command sent in the same write ahead of the commands
                when the connection is new to this object, was opened since
                its last call here (a restarted server, or a pool that
                reconnected it), or when the commands are sent again. Meant
                for a SCRIPT LOAD of a script the commands call. Its reply is
                read and dropped.
            setup_first: Send setup ahead of the commands in any case.

        Raises:
            redis.DataError: An argument is not bytes, str, int or float, or
                is a subclass of int such as bool.
            redis.ConnectionError, redis.TimeoutError: The connection failed
                and no retry was left. It is closed and reconnects on its
                next use. Whether Redis ran the commands is unknown.
        """
        packed = b"".join(_pack(command) for command in commands)
        tries = 0

        def send_and_read() -> list[Any]:
            nonlocal tries
            tries += 1
            if setup is None:
                return _send_and_read(connection, packed, len(commands))
            if setup_first or tries > 1 or connection in self._opened:
                replies = _send_and_read(
                    connection, _pack(setup) + packed, 1 + len(commands)
                )[1:]
            else:
                replies = _send_and_read(connection, packed, len(commands))
            self._opened.discard(connection)
            return replies

        # Any: redis-py leaves these connection methods unannotated.
        connection: Any = self._take()
        if connection not in self._watched:
            connection.register_connect_callback(self._on_connect)
            self._watched.add(connection)
            self._opened.add(connection)
        try:
            replies: list[Any] = connection.retry.call_with_retry(
                send_and_read, lambda error: self._disconnect(connection)
            )
            return replies
        except BaseException:
            # Replies may be left unread on the socket, so start afresh.
            self._disconnect(connection)
            raise
        finally:
            self._give(connection)

    def _on_connect(self, connection: Connection) -> None:
        self._opened.add(connection)

    def _disconnect(self, connection: Any) -> None:
        # The send that follows opens a new connection, too late for its
        # connect callback to choose the write, so mark it opened now.
        connection.disconnect()
        self._opened.add(connection)

    def _take(self) -> Connection:
        if not self._keep:
            return self._pool.get_connection()
        if self._pid != os.getpid():
            self._after_fork()
        try:
            # list.pop is atomic, so taking needs no lock.
            return self._free.pop()
        except IndexError:
            pass
        connection = self._pool.get_connection()
        with self._lock:
            self._from_pool.add(connection)
        return connection

    def _give(self, connection: Connection) -> None:
        if self._keep:
            with self._lock:
                if not self._closed:
                    self._free.append(connection)
                    return
                self._from_pool.discard(connection)
        self._pool.release(connection)

    def _after_fork(self) -> None:
        # The child has only the forking thread, and the lock may have been
        # held by another at the fork. The sockets are still the parent's, so
        # drop them unclosed, as redis-py's own pool does.
        self._lock = threading.Lock()
        self._free = []
        self._from_pool = set()
        self._watched = weakref.WeakSet()
        self._opened = weakref.WeakSet()
        self._pid = os.getpid()

    def close(self) -> None:
        """Give the idle connections back to the client's pool.

        A connection lent out now goes back when its call returns.
        """
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
            self._from_pool.difference_update(free)
        if self._pid != os.getpid():
            return
        for connection in free:
            self._pool.release(connection)


def _pack(command: tuple[Any, ...]) -> bytes:
    try:
        packed: bytes = hiredis.pack_command(command)
    except TypeError:
        # hiredis also rejects subclasses of int, such as bool and IntEnum.
        wrong = [arg for arg in command if not _packs(arg)]
        raise redis.DataError(
            f"invalid argument {wrong!r} in a {command[0]!r} command: pass bytes, "
            "str, int or float"
        ) from None
    return packed


def _packs(arg: Any) -> bool:
    try:
        hiredis.pack_command((arg,))
    except TypeError:
        return False
    return True


def _send_and_read(connection: Any, packed: bytes, count: int) -> list[Any]:
    # redis-py sends each item of the sequence it is given, so wrap the bytes.
    connection.send_packed_command([packed])
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies
