"""A loopback TCP proxy that injects connection faults between clients and Redis.

Clients connect to the proxy's port on 127.0.0.1 and each accepted connection
gets its own connection to the target server. One thread moves the bytes
with a selector. Tests call the fault methods from any thread: each one runs
on the proxy thread and returns once it has taken effect.
"""

from __future__ import annotations

import concurrent.futures
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# Bytes read per recv call, and bytes buffered per direction before the
# proxy stops reading from the sender until the receiver catches up.
CHUNK_SIZE = 64 * 1024
MAX_BUFFER = 1024 * 1024

# Seconds a fault method waits for the proxy thread to apply it.
COMMAND_TIMEOUT = 10.0

# SO_LINGER with a zero timeout makes close() send RST instead of FIN.
LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(eq=False)
class Link:
    """One client connection and its connection to the target server.

    Attributes:
        client: The socket accepted from the client.
        upstream: The socket connected to the target server.
        to_upstream: Bytes read from the client, not yet sent upstream.
        to_client: Bytes read from the target server, not yet sent to the client.
        stalled_until: time.monotonic() value before which nothing is forwarded.
    """

    client: socket.socket
    upstream: socket.socket
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    stalled_until: float = 0.0

    def peer(self, sock: socket.socket) -> socket.socket:
        """Return the other socket of the link."""
        return self.upstream if sock is self.client else self.client

    def outgoing(self, sock: socket.socket) -> bytearray:
        """Return the buffer of bytes waiting to be sent on sock."""
        return self.to_client if sock is self.client else self.to_upstream


class TcpProxy:
    """A TCP proxy on 127.0.0.1 with cut, stall and reject faults.

    Use it as a context manager, or call start() and stop().

    Attributes:
        accepted: Connections accepted and forwarded since start.
        rejected: Connections reset at once while rejecting.
        cut_count: Connections closed by cut().
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.accepted = 0
        self.rejected = 0
        self.cut_count = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._links: dict[socket.socket, Link] = {}
        self._events: dict[socket.socket, int] = {}
        self._reject_until = 0.0
        self._commands: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._running = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    @property
    def url(self) -> str:
        """The redis:// URL of the proxy, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def alive(self) -> bool:
        """True while the proxy thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Control, from any thread

    def start(self) -> None:
        """Listen and start forwarding."""
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_reader.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._running = True
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and the listening socket, and join the thread.

        Calling it again, or before start(), does nothing.
        """
        if self._thread.is_alive():
            self._call(self._shut_down)
            self._thread.join(timeout=COMMAND_TIMEOUT)
        self._close_all()

    def connection_count(self) -> int:
        """Return the number of connections being forwarded now."""
        return self._call(lambda: len(self._links) // 2)

    def cut(self) -> int:
        """Close both sides of every current connection and return how many.

        Bytes still buffered in the proxy are dropped, as on a broken network.
        """
        return self._call(self._cut)

    def stall(self, seconds: float) -> int:
        """Stall every current connection for seconds and return how many.

        Nothing is forwarded on them until then, but the sockets stay open
        and the buffered bytes are delivered afterwards. Connections accepted
        during the stall are forwarded normally.
        """
        return self._call(lambda: self._stall(seconds))

    def reject(self, seconds: float) -> None:
        """Reset every new connection for seconds, right after accepting it.

        The client sees its connection reset on its first read or write.
        Current connections keep working.
        """
        self._call(lambda: self._reject(seconds))

    def restore(self) -> None:
        """End every stall and rejection now."""
        self._call(self._restore)

    def _call(self, function: Callable[[], T]) -> T:
        if not self._running:
            raise RuntimeError("the proxy is not running; call start() first")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._commands.put((function, future))
        try:
            self._wake_writer.send(b"\0")
        except BlockingIOError:
            pass  # The wake socket is full, so the thread wakes anyway.
        return future.result(timeout=COMMAND_TIMEOUT)

    # The proxy thread

    def _run(self) -> None:
        try:
            while self._running:
                for key, mask in self._selector.select(self._select_timeout()):
                    self._dispatch(key.fileobj, mask)  # type: ignore[arg-type]
                self._end_stalls()
        finally:
            self._running = False
            self._fail_commands()

    def _select_timeout(self) -> float | None:
        # Wake up when the first stall ends, or else only on events.
        stalls = [link.stalled_until for link in self._links.values()]
        ends = [until for until in stalls if until]
        if not ends:
            return None
        return max(0.0, min(ends) - time.monotonic())

    def _dispatch(self, sock: socket.socket, mask: int) -> None:
        if sock is self._wake_reader:
            self._run_commands()
        elif sock is self._listener:
            self._accept()
        elif sock in self._links:
            link = self._links[sock]
            if mask & selectors.EVENT_WRITE:
                self._write(link, sock)
            if mask & selectors.EVENT_READ and sock in self._links:
                self._read(link, sock)

    def _run_commands(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                function, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(function())
            except Exception as exc:
                future.set_exception(exc)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if time.monotonic() < self._reject_until:
            # Counted before the reset, so the count is already up when the
            # client gets the reset.
            self.rejected += 1
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=COMMAND_TIMEOUT)
        except OSError:
            client.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        link = Link(client, upstream)
        self._links[client] = link
        self._links[upstream] = link
        self.accepted += 1
        self._update(link)

    def _read(self, link: Link, sock: socket.socket) -> None:
        try:
            data = sock.recv(CHUNK_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._close(link)
            return
        if not data:
            # The peer closed, so pass on what it sent before closing and close.
            self._close(link, flush=True)
            return
        link.outgoing(link.peer(sock)).extend(data)
        self._write(link, link.peer(sock))

    def _write(self, link: Link, sock: socket.socket) -> None:
        buffer = link.outgoing(sock)
        if buffer and time.monotonic() >= link.stalled_until:
            try:
                sent = sock.send(buffer)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(link)
                return
            del buffer[:sent]
        self._update(link)

    def _update(self, link: Link) -> None:
        """Register each socket of a link for the events it can handle now."""
        stalled = time.monotonic() < link.stalled_until
        for sock in (link.client, link.upstream):
            events = 0
            if not stalled:
                if len(link.outgoing(link.peer(sock))) < MAX_BUFFER:
                    events |= selectors.EVENT_READ
                if link.outgoing(sock):
                    events |= selectors.EVENT_WRITE
            self._set_events(sock, events)

    def _set_events(self, sock: socket.socket, events: int) -> None:
        current = self._events.get(sock, 0)
        if events == current:
            return
        if not events:
            self._selector.unregister(sock)
            del self._events[sock]
        elif not current:
            self._selector.register(sock, events)
            self._events[sock] = events
        else:
            self._selector.modify(sock, events)
            self._events[sock] = events

    def _end_stalls(self) -> None:
        now = time.monotonic()
        ended = {
            link
            for link in self._links.values()
            if link.stalled_until and link.stalled_until <= now
        }
        for link in ended:
            link.stalled_until = 0.0
            for sock in (link.client, link.upstream):
                if sock in self._links:
                    self._write(link, sock)

    def _close(self, link: Link, *, flush: bool = False) -> None:
        for sock in (link.client, link.upstream):
            if self._links.pop(sock, None) is None:
                continue
            if self._events.pop(sock, 0):
                self._selector.unregister(sock)
            buffer = link.outgoing(sock)
            if flush and buffer:
                try:
                    sock.send(buffer)
                except OSError:
                    pass
            sock.close()

    def _cut(self) -> int:
        links = set(self._links.values())
        for link in links:
            self._close(link)
        self.cut_count += len(links)
        return len(links)

    def _stall(self, seconds: float) -> int:
        links = set(self._links.values())
        until = time.monotonic() + seconds
        for link in links:
            link.stalled_until = until
            self._update(link)
        return len(links)

    def _reject(self, seconds: float) -> None:
        self._reject_until = time.monotonic() + seconds

    def _restore(self) -> None:
        self._reject_until = 0.0
        for link in set(self._links.values()):
            link.stalled_until = min(link.stalled_until, time.monotonic())
        self._end_stalls()

    def _shut_down(self) -> None:
        self._running = False
        for link in set(self._links.values()):
            self._close(link)

    def _fail_commands(self) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                return
            future.set_exception(RuntimeError("the proxy stopped"))

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for link in set(self._links.values()):
            for sock in (link.client, link.upstream):
                sock.close()
        self._links.clear()
        self._events.clear()
        self._selector.close()
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()
