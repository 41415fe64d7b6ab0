"""The floor: a bare redis-py loop doing the Redis calls one task needs.

The client LPUSHes a task and BLPOPs its reply key; the worker BRPOPs the
task, runs it and LPUSHes the reply. There is no persistence of task state,
no retry and no failure handling, so no real queue can be faster on the same
client library. Run the worker with: python -m benchmarks.peers.bare_adapter
"""

from __future__ import annotations

import sys
import threading
import time
import uuid

import redis

from benchmarks.peers.base import (
    PAYLOAD,
    PAYLOAD_VALUE,
    QUEUE,
    SLEEP,
    SLEEP_SECONDS,
    Adapter,
    Setup,
    redis_url,
    worker_concurrency,
)

TASKS_KEY = f"{QUEUE}:bare:tasks"
REPLY_PREFIX = f"{QUEUE}:bare:reply:"

# A message is b"<workload> <reply key> <argument>"; the reply is the result.
SEPARATOR = b" "


def serve(client: redis.Redis) -> None:
    """Run tasks from TASKS_KEY forever."""
    while True:
        item = client.brpop([TASKS_KEY], timeout=0)
        assert item is not None
        workload, reply_key, argument = item[1].split(SEPARATOR, 2)
        if workload == SLEEP.encode():
            time.sleep(SLEEP_SECONDS)
        client.lpush(reply_key, argument)


def run_worker() -> None:
    """Serve tasks on PEERS_CONCURRENCY threads until the process is killed."""
    threads = [
        threading.Thread(target=serve, args=(redis.Redis.from_url(redis_url()),))
        for _ in range(worker_concurrency())
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class BareAdapter(Adapter):
    name = "redis-py loop"
    packages = ("redis", "hiredis")
    batching = "one pipeline"
    settings = "8 threads, one BRPOP each, for concurrency 8"

    _client: redis.Redis

    def setups(self) -> list[Setup]:
        return [Setup(1, "1 thread"), Setup(8, "8 threads")]

    def worker_command(self, setup: Setup) -> list[str]:
        return [sys.executable, "-m", "benchmarks.peers.bare_adapter"]

    def open(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)

    def close(self) -> None:
        self._client.close()

    def _message(self, workload: str) -> tuple[bytes, bytes]:
        reply_key = f"{REPLY_PREFIX}{uuid.uuid4().hex}".encode()
        argument = PAYLOAD_VALUE.encode() if workload == PAYLOAD else b""
        return reply_key, SEPARATOR.join((workload.encode(), reply_key, argument))

    def submit(self, workload: str) -> bytes:
        reply_key, message = self._message(workload)
        self._client.lpush(TASKS_KEY, message)
        return reply_key

    def enqueue(self, workload: str, count: int) -> list[bytes]:
        reply_keys = []
        with self._client.pipeline(transaction=False) as pipe:
            for _ in range(count):
                reply_key, message = self._message(workload)
                pipe.lpush(TASKS_KEY, message)
                reply_keys.append(reply_key)
            pipe.execute()
        return reply_keys

    def result(self, handle: bytes, timeout: float) -> str | None:
        item = self._client.blpop([handle], timeout=max(timeout, 0.01))
        if item is None:
            raise TimeoutError(f"no reply on {handle!r} within {timeout:.1f} s")
        return item[1].decode() or None


if __name__ == "__main__":
    run_worker()
