"""The background sender that queues async tasks in batches."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import redis

from tasker_redis.config import Config
from tasker_redis.connection import CLIENT_RESENDS, CONNECTION_ERRORS, Backoff
from tasker_redis.errors import RedisUnavailableError, ShuttingDownError
from tasker_redis.results import TaskFuture
from tasker_redis.scripts import QueueScripts

logger = logging.getLogger(__name__)

# Tasks sent per script call; a round trip may carry several calls.
BATCH_SIZE = 500

# Seconds a batch keeps being resent after connection errors before its
# futures fail with RedisUnavailableError.
GIVE_UP_AFTER = 30.0


def resends_allowed(config: Config) -> bool:
    """Return whether a producer may send tasks again after a connection error.

    A resend must reach Redis before the result of a task that already ran
    can expire, or it queues the task again. Resends are sent until
    resend_deadline, at most half of result_ttl after the first send, and
    one attempt can last a socket timeout for each of redis-py's own sends
    on a server that stopped replying. So resends need half of result_ttl
    to cover GIVE_UP_AFTER and such an attempt: 140 s of result_ttl with the
    default socket_timeout.
    """
    attempt = (CLIENT_RESENDS + 1) * config.socket_timeout
    return config.result_ttl / 2 > GIVE_UP_AFTER + attempt


def resend_deadline(
    first_sent: float, first_failure: float, result_ttl: float
) -> float:
    """Return the time.monotonic() after which tasks must not be sent again.

    That is GIVE_UP_AFTER after the first failure, but no later than half of
    result_ttl after the first send. The enqueue script skips an id whose
    task is stored or whose result key exists. A task cannot finish before
    its first send, so its result lives at least result_ttl past that. A
    resend before the second limit thus never finds the result expired and
    queues the finished task again.
    """
    return min(first_failure + GIVE_UP_AFTER, first_sent + result_ttl / 2)


def stop_resending_at(config: Config, first_sent: float, first_failure: float) -> float:
    """Return resend_deadline, or first_failure if resends_allowed is False."""
    if not resends_allowed(config):
        return first_failure
    return resend_deadline(first_sent, first_failure, config.result_ttl)


@dataclass(frozen=True)
class PendingTask:
    """An encoded task waiting to be sent, and the future of its result."""

    task_id: str
    message: bytes
    high_priority: bool
    once: bool
    future: TaskFuture


class Sender:
    """Sends buffered tasks to Redis from one thread, many per round trip.

    Async submissions return once the task is buffered. While one round trip
    is under way, new submissions gather into the next batch, so a single
    producer thread is not limited to one task per round trip. Sending is
    idempotent (the enqueue script skips known ids), so a batch is resent
    after a connection error without queueing any task twice.
    """

    def __init__(self, queue_scripts: QueueScripts, config: Config) -> None:
        self._scripts = queue_scripts
        self._config = config
        self._pending: deque[PendingTask] = deque()
        self._in_flight = 0
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, task: PendingTask) -> None:
        """Buffer a task for sending; start the sender thread on first use."""
        with self._condition:
            if self._closed:
                raise ShuttingDownError()
            self._pending.append(task)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tasker-sender", daemon=True
                )
                self._thread.start()
            self._condition.notify_all()

    @property
    def idle(self) -> bool:
        """True when no task is buffered or being sent."""
        with self._condition:
            return not self._pending and not self._in_flight

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered task was sent; return False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._pending or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    def close(self, *, drop: bool) -> None:
        """Stop taking tasks; with drop, fail unsent ones with ShuttingDownError."""
        with self._condition:
            self._closed = True
            dropped = list(self._pending) if drop else []
            if drop:
                self._pending.clear()
            self._condition.notify_all()
        for task in dropped:
            if not task.future.done():
                task.future.set_exception(ShuttingDownError())

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._pending and not self._closed:
                    self._condition.wait()
                if not self._pending:
                    return
                count = min(len(self._pending), BATCH_SIZE * 4)
                batch = [self._pending.popleft() for _ in range(count)]
                self._in_flight = len(batch)
            try:
                self._send_with_retries(batch)
            except Exception as exc:
                # The thread must outlive any error, or every later task
                # would wait forever; this batch's callers get the error.
                logger.exception("could not queue %d tasks", len(batch))
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(exc)
            finally:
                with self._condition:
                    self._in_flight = 0
                    self._condition.notify_all()

    def _send_with_retries(self, batch: list[PendingTask]) -> None:
        backoff = Backoff()
        first_sent = time.monotonic()
        deadline: float | None = None
        while True:
            try:
                self._send(batch)
                if deadline is not None:
                    logger.info(
                        "queued %d tasks after reconnecting to Redis", len(batch)
                    )
                return
            except (*CONNECTION_ERRORS, redis.exceptions.NoScriptError) as exc:
                # NoScriptError: redis-py resent a pipeline to a restarted
                # server whose script cache is empty. The next attempt loads
                # the scripts again.
                now = time.monotonic()
                if deadline is None:
                    deadline = stop_resending_at(self._config, first_sent, now)
                if now >= deadline:
                    message = (
                        f"could not queue {len(batch)} tasks on Redis at "
                        f"{self._config.masked_redis_url} for "
                        f"{now - first_sent:.1f} s: {exc}; check that the server "
                        "is running"
                    )
                    for task in batch:
                        if not task.future.done():
                            task.future.set_exception(
                                RedisUnavailableError(message, task_id=task.task_id)
                            )
                    logger.error("%s", message)
                    return
                delay = min(backoff.next_delay(), deadline - now)
                logger.error(
                    "could not queue %d tasks on Redis at %s: %s; retrying in %.2f s",
                    len(batch),
                    self._config.masked_redis_url,
                    exc,
                    delay,
                )
                time.sleep(delay)

    def _send(self, batch: list[PendingTask]) -> None:
        # Consecutive tasks with the same flags share one script call; all
        # calls of the batch go in one pipelined round trip.
        with self._scripts.client.pipeline(transaction=False) as pipe:
            start = 0
            while start < len(batch):
                first = batch[start]
                end = start + 1
                while (
                    end < len(batch)
                    and end - start < BATCH_SIZE
                    and batch[end].high_priority == first.high_priority
                    and batch[end].once == first.once
                ):
                    end += 1
                self._scripts.enqueue(
                    [(task.task_id, task.message) for task in batch[start:end]],
                    high_priority=first.high_priority,
                    once=first.once,
                    client=pipe,
                )
                start = end
            pipe.execute()
