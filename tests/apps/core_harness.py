"""The test side of apps.core_tasks: workers, a producer and the events tasks push.

Only the test process imports this module; worker processes import
apps.core_tasks alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import wait_until

from apps import core_tasks
from tasker_redis import Config, TaskManager
from tasker_redis.keys import QueueKeys

WORKER_SPEC = "apps.core_tasks:config"


def process_alive(pid: int) -> bool:
    """Return True if pid is a running process, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


class CoreQueue:
    """One queue of the test's Redis server, its producer and its workers.

    Workers started by start() and the producer in `manager` share the
    settings given here, so both agree on the queue name and the lease.
    """

    def __init__(
        self,
        redis_url: str,
        client: redis.Redis,
        start_workers: Callable[..., Any],
        settings: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.config: Config = core_tasks.build_config(redis_url=redis_url, **settings)
        self.keys = QueueKeys(self.config.queue)
        self.redis = client
        self.manager = TaskManager(self.config)
        self._start_workers = start_workers

    def start(
        self, workers: int = 1, threads: int = 1, env: dict[str, str] | None = None
    ) -> Any:
        """Start `tasker worker` with this queue's settings and return it."""
        return self._start_workers(
            WORKER_SPEC,
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            env={**core_tasks.settings_env(**self.settings), **(env or {})},
        )

    def next_event(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the next task run and return its event."""
        item = self.redis.blpop([core_tasks.EVENTS], timeout=timeout)
        if item is None:
            pytest.fail(f"no task started within {timeout} s")
        event: dict[str, Any] = json.loads(item[1])
        return event

    def remaining_events(self) -> list[dict[str, Any]]:
        """Return the events not taken yet by next_event, in start order."""
        items = self.redis.lrange(core_tasks.EVENTS, 0, -1)
        return [json.loads(item) for item in items]

    def open_gate(self, label: str) -> None:
        """Open the gate that the held task with this label waits on."""
        self.redis.rpush(core_tasks.gate_key(label), 1)

    def next_sigterm(self, timeout: float = 10.0) -> int:
        """Wait until a worker process handled SIGTERM and return its pid."""
        item = self.redis.blpop([core_tasks.SIGTERMS], timeout=timeout)
        if item is None:
            pytest.fail(f"no worker received SIGTERM within {timeout} s")
        return int(item[1])

    def runs(self, task_id: str) -> int:
        """Return how many times a task started."""
        return int(self.redis.get(core_tasks.runs_key(task_id)) or 0)

    def counter(self, key: str) -> int:
        """Return the integer at key, or 0 if it is missing."""
        return int(self.redis.get(key) or 0)

    def worker_ids(self) -> list[str]:
        """Return the ids of workers in the queue's workers sorted set."""
        return [
            member.decode() for member in self.redis.zrange(self.keys.workers, 0, -1)
        ]

    def worker_pid(self, worker_id: str) -> int:
        """Return the pid of a registered worker process."""
        pid = self.redis.hget(self.keys.worker_info(worker_id), "pid")
        if pid is None:
            pytest.fail(f"worker {worker_id} has no pid in Redis")
        return int(pid)

    def alive_workers(self) -> dict[str, int]:
        """Return the pid of each registered worker whose process is running."""
        alive = {}
        for worker_id in self.worker_ids():
            pid = self.redis.hget(self.keys.worker_info(worker_id), "pid")
            if pid is not None and process_alive(int(pid)):
                alive[worker_id] = int(pid)
        return alive

    def wait_for_workers(self, count: int, timeout: float = 20.0) -> dict[str, int]:
        """Wait until count worker processes are registered and running.

        Returns:
            The pid of each running worker, by worker id.
        """
        wait_until(lambda: len(self.alive_workers()) == count, timeout=timeout)
        return self.alive_workers()

    def close(self) -> None:
        """Stop the producer without waiting for results.

        stop() joins the result-listener thread, so it cannot log errors
        into the next test once this test's server is gone. kill() then
        fails the futures still waiting.
        """
        self.manager.stop(timeout=0)
        self.manager.kill()


@contextmanager
def queue_factory(
    redis_url: str, client: redis.Redis, start_workers: Callable[..., Any]
) -> Iterator[Callable[..., CoreQueue]]:
    """Yield a CoreQueue factory that closes every queue it built on exit."""
    queues: list[CoreQueue] = []

    def make(**settings: Any) -> CoreQueue:
        queue = CoreQueue(redis_url, client, start_workers, settings)
        queues.append(queue)
        return queue

    try:
        yield make
    finally:
        for queue in queues:
            queue.close()
