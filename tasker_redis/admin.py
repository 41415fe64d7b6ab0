"""Operator actions on a queue: inspect workers, dead letters and purge.

QueueAdmin also queues tasks by name for the `tasker enqueue` command,
without the result inbox that a TaskManager keeps for its own callers.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis

from tasker_redis import serialization as ser
from tasker_redis.config import Config
from tasker_redis.errors import CannotRetry, DeadLetterNotFound
from tasker_redis.keys import QueueKeys
from tasker_redis.registry import check_timeout
from tasker_redis.results import wait_for_result
from tasker_redis.scripts import QueueCounts, QueueScripts, decode_id

# Tasks or dead-letter entries sent per script call, and script calls per
# pipelined round trip when queueing a batch.
SCRIPT_BATCH = 500
CALLS_PER_ROUND_TRIP = 10

# Seconds one blocking read of a result key waits before checking the deadline.
BLOCK_TIMEOUT = 1.0

# Queued ids that one purge_queue.lua call removes. One such call took 25 to
# 60 ms on a 2-core VM with redis-server 7.0.15, against 3.9 s for a single
# call over a million tasks, which would hold up every worker's heartbeat.
PURGE_BATCH = 10_000

# Status codes returned by requeue_dead.lua, one per entry.
REQUEUED = 1
ENTRY_GONE = 0
TASK_ALREADY_QUEUED = -1
ALREADY_QUEUED_REASON = (
    "a task with this id is queued or running already; retry the entry after "
    "that task has finished"
)

# Characters of arguments shown in a preview.
PREVIEW_LENGTH = 80


def _config_default(name: str) -> Any:
    return next(
        item.default for item in dataclasses.fields(Config) if item.name == name
    )


# A worker counts as alive while its last heartbeat is at most one lease old,
# the window that TaskManager.stats uses too.
DEFAULT_ALIVE_WINDOW: float = _config_default("lease_timeout")
DEFAULT_MAX_PAYLOAD_SIZE: int = _config_default("max_payload_size")


def preview(value: object, limit: int = PREVIEW_LENGTH) -> str:
    """Return repr(value), cut to limit characters with "..." at the end."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class WorkerStatus:
    """One live worker process, read from its heartbeat and its info hash.

    Attributes:
        worker_id: Id the worker claims tasks under.
        host: Host name of the worker's machine, or "" if unknown.
        pid: Process id of the worker, or None if unknown.
        current_task: Id of the task it reported running at its last
            heartbeat, else of a task it holds a lease on, or "" if it holds
            none.
        current_task_name: Name of that task if its message decodes, else "".
        heartbeat_age: Seconds since its last heartbeat, by the Redis clock.
        uptime: Seconds since it started, the Redis clock minus the worker's
            start time by its own clock, or None if unknown.
    """

    worker_id: str
    host: str
    pid: int | None
    current_task: str
    current_task_name: str
    heartbeat_age: float
    uptime: float | None


@dataclass(frozen=True)
class DeadLetterEntry:
    """One entry of the dead-letter list, decoded as far as it decodes.

    Attributes:
        raw: The encoded entry exactly as stored, which identifies it in the
            list when it is retried.
        letter: The decoded entry, or None if it does not decode.
        message: The task message inside it, or None if it does not decode.
        error: Why the entry or its message does not decode, else "".
    """

    raw: bytes
    letter: ser.DeadLetter | None
    message: ser.TaskMessage | None
    error: str

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetterEntry:
        """Decode an entry, recording a failure in error instead of raising it."""
        try:
            letter = ser.DeadLetter.decode(raw)
        except Exception as exc:  # anything in the list may be malformed
            return cls(raw, None, None, f"the entry does not decode: {exc!r}")
        try:
            message = ser.TaskMessage.decode(letter.message)
        except ValueError as exc:
            return cls(raw, letter, None, f"its message does not decode: {exc}")
        return cls(raw, letter, message, "")

    @property
    def task_id(self) -> str:
        """The task id, or "" if the entry does not decode."""
        return self.letter.task_id if self.letter is not None else ""

    @property
    def task_name(self) -> str:
        """The task name, or "" if the message does not decode."""
        return self.message.name if self.message is not None else ""


@dataclass(frozen=True)
class RetryReport:
    """Outcome of a retry of every dead-letter entry.

    Attributes:
        requeued: Entries whose tasks were queued again.
        skipped: Entries left in the list, each with the reason.
    """

    requeued: list[DeadLetterEntry]
    skipped: list[tuple[DeadLetterEntry, str]]


class QueueAdmin:
    """Reads and repairs the state of one queue for an operator.

    The changes that move tasks (retry, purge) run as Lua scripts, each call
    atomic, so workers and producers may keep running meanwhile.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: QueueKeys,
        *,
        alive_window: float = DEFAULT_ALIVE_WINDOW,
        max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    ) -> None:
        """Bind to a queue.

        Args:
            client: A client of the queue's Redis server, without
                decode_responses.
            keys: The queue's key names.
            alive_window: Seconds since its last heartbeat within which a
                worker counts as alive; use the workers' lease_timeout.
            max_payload_size: Bytes an encoded task may have.
        """
        self.client = client
        self.keys = keys
        self.scripts = QueueScripts(client, keys)
        self.alive_window = alive_window
        self.max_payload_size = max_payload_size

    # Queue state

    def counts(self) -> QueueCounts:
        """Read queue depths, the live worker count and the counters."""
        return self.scripts.counts(int(self.alive_window * 1000))

    def workers(self) -> list[WorkerStatus]:
        """List the workers whose heartbeat is within alive_window, by id."""
        seconds, microseconds = self.client.time()
        now_ms = seconds * 1000 + microseconds // 1000
        members = cast(
            "list[tuple[bytes, float]]",
            self.client.zrangebyscore(
                self.keys.workers,
                now_ms - int(self.alive_window * 1000),
                "+inf",
                withscores=True,
            ),
        )
        worker_ids = sorted(decode_id(member) for member, _ in members)
        beats = {decode_id(member): score for member, score in members}
        with self.client.pipeline(transaction=False) as pipe:
            for worker_id in worker_ids:
                pipe.hgetall(self.keys.worker_info(worker_id))
            pipe.hgetall(self.keys.claims)
            *infos, claims = pipe.execute()

        leased = _tasks_by_worker(claims)
        current = [
            _current_task(info, leased.get(worker_id, []))
            for worker_id, info in zip(worker_ids, infos, strict=True)
        ]
        names = self._task_names([task_id for task_id in current if task_id])
        return [
            _worker_status(
                worker_id,
                info,
                now_ms=now_ms,
                heartbeat_ms=beats[worker_id],
                task_id=task_id,
                task_name=names.get(task_id, ""),
            )
            for worker_id, info, task_id in zip(worker_ids, infos, current, strict=True)
        ]

    def _task_names(self, task_ids: list[str]) -> dict[str, str]:
        if not task_ids:
            return {}
        messages = cast(
            "list[bytes | None]", self.client.hmget(self.keys.tasks, task_ids)
        )
        names = {}
        for task_id, data in zip(task_ids, messages, strict=True):
            if data is not None:
                try:
                    names[task_id] = ser.TaskMessage.decode(data).name
                except ValueError:
                    continue
        return names

    # Dead letters

    def dead_letters(self, limit: int | None = None) -> list[DeadLetterEntry]:
        """List up to limit dead-letter entries, newest first, or all with None."""
        if limit == 0:
            return []
        end = -1 if limit is None else limit - 1
        entries = cast("list[bytes]", self.client.lrange(self.keys.dead, 0, end))
        return [DeadLetterEntry.decode(raw) for raw in entries]

    def dead_letter(self, task_id: str) -> DeadLetterEntry:
        """Return the newest dead-letter entry of a task id.

        Raises:
            DeadLetterNotFound: No entry has that task id.
        """
        for entry in self.dead_letters():
            if entry.task_id == task_id:
                return entry
        raise DeadLetterNotFound(
            f"no dead-letter entry with task id {task_id!r} in queue "
            f"{self.keys.queue!r}; list the entries with `tasker dead-letter list`"
        )

    def retry_dead_letter(self, task_id: str) -> DeadLetterEntry:
        """Queue the task of a dead-letter entry again and remove the entry.

        The task keeps its id and priority and gets a fresh retry and crash
        count. Its old result is deleted, so a caller waiting on the id gets
        the outcome of the new run.

        Returns:
            The entry that was retried.

        Raises:
            DeadLetterNotFound: No entry has that task id, or another client
                removed it first.
            CannotRetry: The entry's message does not decode, or a task with
                that id is queued or running already.
        """
        entry = self.dead_letter(task_id)
        reason = _unretryable_reason(entry)
        if reason:
            raise CannotRetry(f"cannot retry dead-letter entry {task_id!r}: {reason}")
        (status,) = self._requeue([entry])
        if status == ENTRY_GONE:
            raise DeadLetterNotFound(
                f"dead-letter entry {task_id!r} was removed by another client "
                "before it could be retried; list the entries again"
            )
        if status == TASK_ALREADY_QUEUED:
            raise CannotRetry(
                f"cannot retry dead-letter entry {task_id!r}: {ALREADY_QUEUED_REASON}"
            )
        return entry

    def retry_all_dead_letters(self) -> RetryReport:
        """Queue the tasks of every retryable dead-letter entry again.

        Entries whose message does not decode, and entries whose task id is
        queued or running already, stay in the list.
        """
        requeued: list[DeadLetterEntry] = []
        skipped: list[tuple[DeadLetterEntry, str]] = []
        retryable: list[DeadLetterEntry] = []
        for entry in self.dead_letters():
            reason = _unretryable_reason(entry)
            if reason:
                skipped.append((entry, reason))
            else:
                retryable.append(entry)

        for start in range(0, len(retryable), SCRIPT_BATCH):
            batch = retryable[start : start + SCRIPT_BATCH]
            for entry, status in zip(batch, self._requeue(batch), strict=True):
                if status == REQUEUED:
                    requeued.append(entry)
                elif status == TASK_ALREADY_QUEUED:
                    skipped.append((entry, ALREADY_QUEUED_REASON))
                # ENTRY_GONE: another client retried or purged it meanwhile.
        return RetryReport(requeued, skipped)

    def _requeue(self, entries: Sequence[DeadLetterEntry]) -> list[int]:
        result_keys: list[str] = []
        args: list[Any] = []
        for entry in entries:
            assert entry.letter is not None and entry.message is not None
            result_keys.append(self.keys.result(entry.task_id))
            args.extend(
                (
                    entry.raw,
                    entry.task_id,
                    entry.letter.message,
                    "1" if entry.message.priority else "0",
                    "1" if entry.message.once else "0",
                )
            )
        reply = self.scripts._call("requeue_dead", result_keys, args)
        return [int(status) for status in reply]

    def purge_dead_letters(self) -> int:
        """Delete every dead-letter entry and return how many there were."""
        # UNLINK frees a long list's memory in the background instead of
        # blocking the server while it does.
        with self.client.pipeline(transaction=True) as pipe:
            pipe.llen(self.keys.dead)
            pipe.unlink(self.keys.dead)
            length, _ = pipe.execute()
        return int(length)

    # Waiting tasks

    def purge_queue(self) -> int:
        """Delete the tasks waiting in the queue and return how many were deleted.

        Tasks in flight keep running. The purge runs in script calls of at
        most PURGE_BATCH tasks each, oldest first, so workers and producers
        keep being served in between. It removes as many ids as were queued
        when it began, so a task queued meanwhile survives unless workers
        claimed older ones first.
        """
        # NOTE: a producer waiting for the result of a purged task waits
        # until its own timeout, since no result is written. Writing one
        # would need a result kind for purged tasks.
        deleted = 0
        budget: int | None = None
        while True:
            batch = min(PURGE_BATCH, budget) if budget is not None else PURGE_BATCH
            done, removed, queued = self.scripts._call("purge_queue", [], [batch])
            deleted += int(done)
            if budget is None:
                budget = int(removed) + int(queued)
            budget -= int(removed)
            if budget <= 0 or int(queued) == 0:
                return deleted

    def queue_tasks(
        self,
        task_name: str,
        arguments: Iterable[Sequence[Any]],
        kwargs: dict[str, Any] | None = None,
        *,
        high_priority: bool = False,
        once: bool = False,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Queue one task per argument list by registered name.

        Every message is encoded before any is sent, so an argument that
        cannot be encoded queues nothing. The tasks carry no reply inbox:
        their results go only to their result keys, for wait_result.

        Args:
            task_name: The name a worker registered the task under.
            arguments: Positional arguments of each task.
            kwargs: Keyword arguments given to every task.
            high_priority: Queue on the high-priority list.
            once: At-most-once delivery.
            timeout: Seconds each run may take on a worker, or None for the
                task's own timeout.
            progress: Called with the number of tasks sent after each round
                trip.

        Returns:
            The task ids, in order.

        Raises:
            SerializationError: An argument cannot be encoded or a message is
                larger than max_payload_size.
            TaskerError: timeout is not a positive number.
        """
        run_timeout = check_timeout(timeout)
        messages = []
        for args in arguments:
            message = ser.TaskMessage(
                task_id=uuid.uuid4().hex,
                name=task_name,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                priority=high_priority,
                once=once,
                enqueued_at=time.time(),
                timeout=run_timeout,
            )
            messages.append((message.task_id, message.encode(self.max_payload_size)))

        per_round_trip = SCRIPT_BATCH * CALLS_PER_ROUND_TRIP
        for start in range(0, len(messages), per_round_trip):
            chunk = messages[start : start + per_round_trip]
            self.scripts.enqueue_pipelined(
                chunk, high_priority=high_priority, once=once, batch_size=SCRIPT_BATCH
            )
            if progress is not None:
                progress(len(chunk))
        return [task_id for task_id, _ in messages]

    def wait_result(self, task_id: str, timeout: float | None) -> ser.TaskResult:
        """Block until the task's result is in Redis and return it.

        Raises:
            TimeoutError: No result within timeout seconds.
        """
        return wait_for_result(
            self.client,
            self.keys,
            task_id,
            timeout=timeout,
            block_timeout=BLOCK_TIMEOUT,
        )


def _tasks_by_worker(claims: dict[bytes, bytes]) -> dict[str, list[str]]:
    leased: dict[str, list[str]] = {}
    for task_id, claim in claims.items():
        # A claim is "<fencing token>:<worker id>".
        worker_id = decode_id(claim).partition(":")[2]
        leased.setdefault(worker_id, []).append(decode_id(task_id))
    return leased


def _current_task(info: dict[bytes, bytes], leased: list[str]) -> str:
    # The info hash changes only at heartbeats, every lease_timeout / 3, while
    # the claims change with every claim and result. The reported task counts
    # while the worker still has its lease. Otherwise the lowest leased id is
    # shown, so repeated reads agree.
    reported = decode_id(info.get(b"current_task", b""))
    if reported in leased:
        return reported
    return min(leased) if leased else ""


def _worker_status(
    worker_id: str,
    info: dict[bytes, bytes],
    *,
    now_ms: int,
    heartbeat_ms: float,
    task_id: str,
    task_name: str,
) -> WorkerStatus:
    pid = info.get(b"pid", b"")
    started_at = info.get(b"started_at", b"")
    try:
        uptime: float | None = max(0.0, now_ms / 1000 - float(started_at))
    except ValueError:
        uptime = None
    return WorkerStatus(
        worker_id=worker_id,
        host=decode_id(info.get(b"host", b"")),
        pid=int(pid) if pid.isdigit() else None,
        current_task=task_id,
        current_task_name=task_name,
        heartbeat_age=max(0.0, (now_ms - heartbeat_ms) / 1000),
        uptime=uptime,
    )


def _unretryable_reason(entry: DeadLetterEntry) -> str:
    if entry.letter is None or entry.message is None:
        return (
            f"{entry.error}, so it can only be deleted, with `tasker dead-letter purge`"
        )
    return ""
