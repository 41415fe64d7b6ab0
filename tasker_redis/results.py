"""Waiting for task results: futures, the inbox listener and waits by task id."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from tasker_redis import serialization as ser
from tasker_redis.connection import CONNECTION_ERRORS, Backoff
from tasker_redis.errors import (
    MaxRetriesExceeded,
    SerializationError,
    ShuttingDownError,
    TaskDeadLettered,
    TaskError,
    TaskFailed,
    TaskLost,
    TaskNotRegistered,
    TaskTimeout,
)
from tasker_redis.keys import QueueKeys

logger = logging.getLogger(__name__)

# Results taken from the inbox per round trip once one has arrived.
INBOX_BATCH = 512

# Seconds between reads of the result keys of every waiting task, a safety
# net for inbox entries lost with a connection.
SWEEP_INTERVAL = 10.0

_ERROR_CLASSES: dict[str, type[TaskError]] = {
    ser.FAILED: TaskFailed,
    ser.NOT_REGISTERED: TaskNotRegistered,
    ser.MAX_RETRIES: MaxRetriesExceeded,
    ser.LOST: TaskLost,
    ser.DEAD_LETTERED: TaskDeadLettered,
    ser.SERIALIZATION: SerializationError,
    ser.TIMEOUT: TaskTimeout,
}


def error_from_result(result: ser.TaskResult) -> TaskError:
    """Build the exception that a failed result raises in the caller."""
    error_class = _ERROR_CLASSES.get(result.error_kind, TaskFailed)
    if result.error_kind == ser.FAILED:
        message = (
            f"task {result.task_id} raised {result.error_type}: {result.error_message}"
        )
    else:
        message = result.error_message
    details = {
        "task_id": result.task_id,
        "type_name": result.error_type,
        "remote_message": result.error_message,
        "traceback": result.traceback,
    }
    if error_class is TaskNotRegistered:
        return TaskNotRegistered(message, task_name=result.task_name, **details)
    return error_class(message, **details)


def unwrap(result: ser.TaskResult) -> Any:
    """Return the value of a successful result or raise its error."""
    if result.ok:
        return result.value
    raise error_from_result(result)


class TaskFuture(concurrent.futures.Future[Any]):
    """A concurrent.futures.Future for a queued task.

    Attributes:
        task_id: The task's id; any process can wait for it with
            TaskManager.result.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task's value.

        Raises:
            TimeoutError: The task did not finish within timeout seconds.
            TaskError: The task failed; its subclass names the cause.
            ShuttingDownError: The manager was killed while waiting.
        """
        try:
            return super().result(timeout)
        except concurrent.futures.TimeoutError:
            # TaskTimeout is a TimeoutError too: re-raise a task's own error.
            if self.done():
                raise
            # Before Python 3.11 this class is not the built-in TimeoutError.
            raise TimeoutError(
                f"timed out after {timeout} s waiting for task {self.task_id}"
            ) from None

    def resolve(self, result: ser.TaskResult) -> None:
        """Complete the future from a worker's result, once."""
        if self.done():
            return
        try:
            if result.ok:
                self.set_result(result.value)
            else:
                self.set_exception(error_from_result(result))
        except concurrent.futures.InvalidStateError:
            pass


class ResultListener:
    """Delivers results from this manager's inbox list to waiting futures.

    Workers push each result both to the task's own result key and to the
    inbox named in the task message, so one thread blocking on one list
    serves every task this process waits for. After a lost connection the
    listener also reads the result keys of all waiting tasks, in case the
    inbox was lost with a Redis restart.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: QueueKeys,
        manager_id: str,
        block_timeout: float,
    ) -> None:
        self.inbox = keys.inbox(manager_id)
        self._client = client
        self._keys = keys
        self._block_timeout = block_timeout
        self._pending: dict[str, TaskFuture] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, task_id: str) -> TaskFuture:
        """Create the future of a task before it is queued, so no result is missed."""
        future = TaskFuture(task_id)
        with self._lock:
            self._pending[task_id] = future
            self._start_locked()
        return future

    def register_many(self, task_ids: list[str]) -> list[TaskFuture]:
        """Create the futures of tasks before they are queued, under one lock."""
        futures = [TaskFuture(task_id) for task_id in task_ids]
        with self._lock:
            self._pending.update(zip(task_ids, futures, strict=True))
            self._start_locked()
        return futures

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="tasker-results", daemon=True
            )
            self._thread.start()

    def get(self, task_id: str) -> TaskFuture | None:
        """Return the future of a task this process is waiting for, if any."""
        with self._lock:
            return self._pending.get(task_id)

    def pending(self) -> list[TaskFuture]:
        """Return the futures still waiting, dropping those completed otherwise.

        A future completed without a result from Redis (cancelled, or failed
        by kill() or the sender) is forgotten here.
        """
        with self._lock:
            done = [task_id for task_id, f in self._pending.items() if f.done()]
            for task_id in done:
                del self._pending[task_id]
            return list(self._pending.values())

    def fail_all(self, error: BaseException) -> None:
        """Complete every waiting future with error."""
        for future in self.pending():
            if not future.done():
                future.set_exception(error)

    def stop(self, wait: bool) -> None:
        """Stop the listener thread; with wait, join it."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        if wait:
            self._wake()
            thread.join(timeout=self._block_timeout + 1.0)

    def _wake(self) -> None:
        # An empty entry makes the blocked BLPOP return now; _deliver skips it.
        try:
            with self._client.pipeline() as pipe:
                pipe.lpush(self.inbox, b"")
                pipe.pexpire(self.inbox, 60_000)
                pipe.execute()
        except CONNECTION_ERRORS:
            pass

    def _run(self) -> None:
        backoff = Backoff()
        recheck = False
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while not self._stopping.is_set():
            try:
                if recheck or time.monotonic() >= next_sweep:
                    # A sweep also catches a result whose inbox entry was
                    # popped on a connection that failed before the reply.
                    self._read_result_keys()
                    recheck = False
                    next_sweep = time.monotonic() + SWEEP_INTERVAL
                self._receive()
                backoff.reset()
            except CONNECTION_ERRORS as exc:
                delay = backoff.next_delay()
                logger.error(
                    "lost the Redis connection while waiting for %d results: %s; "
                    "reconnecting in %.2f s",
                    len(self._pending),
                    exc,
                    delay,
                )
                recheck = True
                self._stopping.wait(delay)
            except Exception:
                delay = backoff.next_delay()
                logger.exception(
                    "result listener failed; restarting it in %.2f s", delay
                )
                self._stopping.wait(delay)

    def _receive(self) -> None:
        item = self._client.blpop([self.inbox], timeout=self._block_timeout)
        if item is None:
            return
        # Deliver the first result before asking for more: it saves a round
        # trip when results arrive one at a time.
        self._deliver(item[1])
        more = self._client.lpop(self.inbox, INBOX_BATCH)
        for data in more or ():
            self._deliver(data)

    def _deliver(self, data: object) -> None:
        if not isinstance(data, bytes) or not data:
            return
        try:
            result = ser.TaskResult.decode(data)
        except Exception:
            logger.exception("skipped an undecodable entry in inbox %s", self.inbox)
            return
        # Popped here rather than in a done callback, which would cost a lock
        # round per task when queueing thousands at once.
        with self._lock:
            future = self._pending.pop(result.task_id, None)
        if future is not None:
            future.resolve(result)

    def _read_result_keys(self) -> None:
        waiting = [future.task_id for future in self.pending()]
        if not waiting:
            return
        with self._client.pipeline(transaction=False) as pipe:
            for task_id in waiting:
                pipe.lindex(self._keys.result(task_id), 0)
            replies = pipe.execute()
        for data in replies:
            if data:
                self._deliver(data)


def wait_for_result(
    client: redis.Redis,
    keys: QueueKeys,
    task_id: str,
    *,
    timeout: float | None,
    block_timeout: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> ser.TaskResult:
    """Block until the result of task_id is in Redis and return it.

    BLMOVE from a list to itself returns its element without removing it and
    wakes every client blocked on the key, so any number of processes can
    wait for the same task.

    Raises:
        TimeoutError: No result within timeout seconds.
        ShuttingDownError: should_stop returned True.
    """
    key = keys.result(task_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    backoff = Backoff()
    while True:
        if should_stop():
            raise ShuttingDownError()
        remaining = block_timeout
        if deadline is not None:
            remaining = min(block_timeout, deadline - time.monotonic())
            if remaining <= 0:
                # A zero or spent timeout still returns a result already there.
                with contextlib.suppress(*CONNECTION_ERRORS):
                    data = client.lindex(key, 0)
                    if data is not None:
                        return ser.TaskResult.decode(data)  # type: ignore[arg-type]
                raise TimeoutError(
                    f"timed out after {timeout} s waiting for task {task_id}"
                )
        try:
            data = client.blmove(key, key, max(remaining, 0.001), "LEFT", "LEFT")  # type: ignore[arg-type]
        except CONNECTION_ERRORS as exc:
            delay = backoff.next_delay()
            logger.error(
                "lost the Redis connection while waiting for task %s: %s; "
                "reconnecting in %.2f s",
                task_id,
                exc,
                delay,
            )
            time.sleep(delay)
            continue
        if data is not None:
            return ser.TaskResult.decode(data)  # type: ignore[arg-type]
