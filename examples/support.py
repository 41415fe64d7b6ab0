"""Helpers the examples share: a Redis server and `tasker worker` subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from tasker_redis import TaskManager
from tasker_redis.local_server import LocalRedisServer

# The repository root: workers run there, so `examples.NAME:config` imports.
ROOT = Path(__file__).resolve().parent.parent

# Seconds to wait for started workers to send their first heartbeat.
WORKER_START_TIMEOUT = 30.0
# Seconds a SIGTERM-ed `tasker worker` has to let running tasks finish.
WORKER_STOP_TIMEOUT = 60.0


@contextmanager
def redis_server(url: str | None, data_dir: Path | None = None) -> Iterator[str]:
    """Yield url if it is set, else start a local Redis server and yield its URL.

    The local server binds to 127.0.0.1 on a free port and is stopped on exit.
    It keeps append-only data in data_dir, or in a temporary directory that is
    removed afterwards when data_dir is None.
    """
    if url:
        yield url
        return
    if data_dir is not None:
        with LocalRedisServer(data_dir) as server:
            yield server.url
        return
    with (
        tempfile.TemporaryDirectory(prefix="tasker-example-") as directory,
        LocalRedisServer(directory, appendonly=False) as server,
    ):
        yield server.url


class Workers:
    """A `tasker worker MODULE:ATTRIBUTE` subprocess, run from the repository root.

    Use it as a context manager: entering starts the subprocess, leaving
    sends SIGTERM and waits until running tasks finish and it exits. Leaving
    without an exception raises RuntimeError if it exited with a non-zero code.
    """

    def __init__(
        self,
        spec: str,
        *,
        count: int,
        env: dict[str, str],
        log_path: Path | None = None,
    ) -> None:
        """Prepare the subprocess.

        Args:
            spec: The Config to load, such as "examples.calculator:config".
            count: Worker processes to start.
            env: Variables set for the subprocess on top of this process's
                environment, at least TASKER_REDIS_URL.
            log_path: File for the workers' log, replaced at each start; None
                sends the log to stderr.
        """
        self.spec = spec
        self.count = count
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start `tasker worker` as `python -m tasker_redis_cli worker`."""
        command = [
            sys.executable,
            "-m",
            "tasker_redis_cli",
            "worker",
            self.spec,
            "--workers",
            str(self.count),
        ]
        environment = {**os.environ, **self.env}
        if self.log_path is None:
            self.process = self._popen(command, environment, sys.stderr.fileno())
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = self._popen(command, environment, log.fileno())

    @staticmethod
    def _popen(
        command: list[str], environment: dict[str, str], output: int
    ) -> subprocess.Popen[bytes]:
        # A new session keeps a Ctrl-C in the terminal from reaching the
        # workers directly, so only this process decides when they stop.
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log_hint(self) -> str:
        """Where the workers' log went, for error messages."""
        return str(self.log_path) if self.log_path else "the log above"

    def wait_until_running(self, manager: TaskManager) -> None:
        """Block until the queue has at least `count` live workers.

        Raises:
            RuntimeError: The subprocess exited first.
            TimeoutError: The workers did not start within 30 s.
        """
        assert self.process is not None
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        # Workers announce themselves only through heartbeats in Redis, so
        # poll the queue's stats.
        while manager.stats().active_workers < self.count:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"tasker worker {self.spec} exited with code {code} before its "
                    f"workers started; see {self.log_hint}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.count} workers of {self.spec} did not start within "
                    f"{WORKER_START_TIMEOUT:.0f} s; see {self.log_hint}"
                )
            time.sleep(0.05)

    def stop(self) -> int:
        """Send SIGTERM, wait for the exit and return the exit code.

        If running tasks take longer than 60 s, a second SIGTERM makes
        `tasker worker` kill its workers at once and put their tasks back on
        the queue.
        """
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=WORKER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGTERM)
                process.wait()
        return process.returncode

    def __enter__(self) -> Workers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        code = self.stop()
        if exc_type is None and code != 0:
            raise RuntimeError(
                f"tasker worker {self.spec} exited with code {code}; "
                f"see {self.log_hint}"
            )
