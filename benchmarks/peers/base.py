"""The interface that every adapter implements, and the workloads they run.

An adapter drives one task-queue system: it names the worker command that
runs the benchmark tasks, and it submits tasks and collects their results
from the harness process. The worker imports the adapter's own module, so
each module also defines the system's task functions. Worker-side code reads
the Redis URL and the concurrency from environment variables that the
harness sets.
"""

from __future__ import annotations

import abc
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# Environment variables that carry settings from the harness to a worker.
URL_ENV = "PEERS_REDIS_URL"
CONCURRENCY_ENV = "PEERS_CONCURRENCY"

# The queue (or key prefix) name every adapter uses.
QUEUE = "peers"

# Workloads: a no-op task, a task that returns its 1 KB argument, and a task
# that sleeps for 10 ms (asyncio.sleep on the asyncio systems).
NOOP = "noop"
PAYLOAD = "payload"
SLEEP = "sleep"
PAYLOAD_VALUE = "x" * 1024
SLEEP_SECONDS = 0.010

# Seconds between result checks for the systems whose clients poll for a
# result (arq, taskiq) and between arq worker polls of its queue. Their
# defaults (0.5 s for arq, 0.2 s for taskiq) would measure the poll
# interval rather than the system.
POLL_INTERVAL = 0.002


class AdapterUnavailable(Exception):
    """The system cannot run on this machine; the message gives the reason."""


def redis_url() -> str:
    """Return the Redis URL that the harness passed in the environment."""
    try:
        return os.environ[URL_ENV]
    except KeyError:
        raise AdapterUnavailable(
            f"{URL_ENV} is not set: run the benchmark with python -m benchmarks.peers"
        ) from None


def worker_concurrency() -> int:
    """Return the number of tasks a worker should run at once (default 1)."""
    return int(os.environ.get(CONCURRENCY_ENV, "1"))


def console_script(name: str) -> str:
    """Return the path of a command installed in this interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise AdapterUnavailable(f"command {name!r} not found next to {sys.executable}")
    return str(path)


def task_arguments(workload: str) -> tuple[Any, ...]:
    """Return the positional arguments of one task of the workload."""
    return (PAYLOAD_VALUE,) if workload == PAYLOAD else ()


def check_result(workload: str, value: Any) -> None:
    """Raise ValueError if value is not what a task of the workload returns."""
    expected = PAYLOAD_VALUE if workload == PAYLOAD else None
    if value != expected:
        raise ValueError(
            f"{workload} task returned {str(value)[:80]!r}, expected "
            f"{str(expected)[:80]!r}"
        )


@dataclass(frozen=True)
class Setup:
    """One way to run a system's worker: its concurrency and how it gets it.

    Attributes:
        concurrency: Tasks the worker may run at once.
        execution: The pool, threads or processes that give that concurrency.
        skip_reason: Why the system cannot run it, or None if it can.
    """

    concurrency: int
    execution: str
    skip_reason: str | None = None


class Adapter(abc.ABC):
    """Drives one system from the harness process, with blocking calls.

    Subclasses implement submit() and result(); enqueue() submits one task
    at a time unless the subclass overrides it with the system's batch call.
    """

    name: ClassVar[str]
    # Distributions whose versions the report lists.
    packages: ClassVar[tuple[str, ...]]
    # How enqueue() batches tasks, or "" if it submits them one by one.
    batching: ClassVar[str] = ""
    # Settings that differ from the system's defaults, for the report.
    settings: ClassVar[str] = ""
    # Tasks per throughput run, if fewer than the harness's count, for a
    # system so slow that the full count would not fit in the run time.
    max_tasks: ClassVar[int | None] = None

    @abc.abstractmethod
    def setups(self) -> list[Setup]:
        """Return the setups to measure, skipped ones included."""

    @abc.abstractmethod
    def worker_command(self, setup: Setup) -> list[str]:
        """Return the argv that starts the system's worker for setup."""

    @abc.abstractmethod
    def open(self, url: str) -> None:
        """Connect the client side to the Redis server at url."""

    @abc.abstractmethod
    def submit(self, workload: str) -> Any:
        """Queue one task of the workload and return a handle for its result."""

    @abc.abstractmethod
    def result(self, handle: Any, timeout: float) -> Any:
        """Wait for the value of a submitted task; raise TimeoutError after timeout."""

    def close(self) -> None:  # noqa: B027 (most adapters have nothing to close)
        """Close the client side."""

    def enqueue(self, workload: str, count: int) -> list[Any]:
        """Queue count tasks of the workload and return their handles."""
        return [self.submit(workload) for _ in range(count)]

    def wait(self, workload: str, handles: list[Any], timeout: float) -> None:
        """Wait for every handle's value and check it.

        Raises:
            TimeoutError: The results took more than timeout seconds in all.
        """
        deadline = time.monotonic() + timeout
        for handle in handles:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"results not complete after {timeout:.0f} s")
            check_result(workload, self.result(handle, remaining))

    def round_trips(self, workload: str, count: int, timeout: float) -> list[float]:
        """Submit count tasks one after another, waiting for each; return seconds each.

        Raises:
            TimeoutError: The round trips took more than timeout seconds in all.
        """
        deadline = time.monotonic() + timeout
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            handle = self.submit(workload)
            value = self.result(handle, max(deadline - time.monotonic(), 0.01))
            samples.append(time.perf_counter() - started)
            check_result(workload, value)
        return samples


class AsyncAdapter(Adapter):
    """An adapter whose client is asyncio code, run on a private event loop.

    Subclasses implement the coroutines; the blocking methods of Adapter run
    them to completion. round_trips() times each call inside the loop, so
    the latency excludes the cost of entering the loop.
    """

    _loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    async def open_async(self, url: str) -> None:
        """Connect the client side to the Redis server at url."""

    @abc.abstractmethod
    async def submit_async(self, workload: str) -> Any:
        """Queue one task of the workload and return a handle for its result."""

    @abc.abstractmethod
    async def result_async(self, handle: Any, timeout: float) -> Any:
        """Wait for the value of a submitted task; raise TimeoutError after timeout."""

    async def close_async(self) -> None:
        """Close the client side."""

    def _run(self, coroutine: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coroutine)

    def open(self, url: str) -> None:
        self._run(self.open_async(url))

    def submit(self, workload: str) -> Any:
        return self._run(self.submit_async(workload))

    def result(self, handle: Any, timeout: float) -> Any:
        return self._run(self.result_async(handle, timeout))

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self._run(self.close_async())
        finally:
            self._loop.close()
            self._loop = None

    def enqueue(self, workload: str, count: int) -> list[Any]:
        async def submit_all() -> list[Any]:
            return [await self.submit_async(workload) for _ in range(count)]

        result: list[Any] = self._run(submit_all())
        return result

    def wait(self, workload: str, handles: list[Any], timeout: float) -> None:
        async def wait_all() -> None:
            deadline = time.monotonic() + timeout
            for handle in handles:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"results not complete after {timeout:.0f} s")
                check_result(workload, await self.result_async(handle, remaining))

        self._run(wait_all())

    def round_trips(self, workload: str, count: int, timeout: float) -> list[float]:
        async def measure() -> list[float]:
            deadline = time.monotonic() + timeout
            samples = []
            for _ in range(count):
                started = time.perf_counter()
                handle = await self.submit_async(workload)
                remaining = max(deadline - time.monotonic(), 0.01)
                value = await self.result_async(handle, remaining)
                samples.append(time.perf_counter() - started)
                check_result(workload, value)
            return samples

        result: list[float] = self._run(measure())
        return result
