"""Fixtures shared by the test suite: a private Redis server and worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tasker_redis.local_server import LocalRedisServer

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalRedisServer]:
    """A redis-server on a free loopback port, append-only, stopped after the test."""
    server = LocalRedisServer(tmp_path / "redis", appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def redis_url(redis_server: LocalRedisServer) -> str:
    """The URL of the test's private Redis server."""
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client of the test's private server."""
    # redis-py's default 5 s socket timeout would cut short a test's BLPOP
    # with a longer block time.
    client = redis.Redis.from_url(redis_url, socket_timeout=120)
    try:
        yield client
    finally:
        client.close()


@dataclass
class WorkerProcess:
    """A `tasker worker` supervisor started by a test, in its own process group."""

    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Return everything the supervisor and its workers logged so far."""
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        """Send a signal to the supervisor only."""
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 30) -> int:
        """Wait for the supervisor to exit and return its exit code."""
        return self.process.wait(timeout=timeout)

    def kill_group(self) -> None:
        """SIGKILL the supervisor and every worker process it started."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


StartWorkers = Callable[..., WorkerProcess]


@pytest.fixture
def start_workers(redis_url: str, tmp_path: Path) -> Iterator[StartWorkers]:
    """Return a function that starts `tasker worker SPEC ARGS...` as a subprocess.

    The process runs with TASKER_REDIS_URL pointing at the test's server and
    with tests/ on PYTHONPATH, so specs like `apps.calc:config` import test
    modules. Every process group it started is killed after the test.
    """
    started: list[WorkerProcess] = []

    def start(
        spec: str, *args: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        command = [sys.executable, "-m", "tasker_redis_cli", "worker", spec, *args]
        environment = {
            **os.environ,
            "TASKER_REDIS_URL": redis_url,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
            **(env or {}),
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=TESTS,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(process, log_path, [spec, *args])
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.kill_group()
