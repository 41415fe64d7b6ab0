"""Lua scripts that move tasks between Redis keys atomically, and their callers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from tasker_redis.direct import DirectConnections
from tasker_redis.keys import (
    FIXED_KEY_SUFFIXES,
    METRICS_SLOT_MS,
    METRICS_TTL_MS,
    QueueKeys,
)

# Tasks sent per enqueue script call in a pipelined batch.
ENQUEUE_BATCH = 500

# Counters in the queue's counters hash, incremented by finish.lua.
COMPLETED = "completed"
FAILED = "failed"
LOST = "lost"
DEAD_LETTERED = "dead_lettered"


def _load_source(name: str) -> str:
    return (resources.files("tasker_redis") / "lua" / f"{name}.lua").read_text()


def _build_script(name: str) -> str:
    # KEYS[1] is the queue prefix. The script names the fixed keys from it
    # through the table K, then come the shared functions and its own body.
    # Sending one prefix instead of thirteen key names saves encoding work
    # on every call. All the names share the prefix's hash tag, so Redis
    # Cluster still routes the call to the node that has every key.
    fields = ", ".join(
        f"{name} = KEYS[1] .. '{suffix}'" for name, suffix in FIXED_KEY_SUFFIXES.items()
    )
    return f"local K = {{{fields}}}\n{_load_source('lib')}\n{_load_source(name)}"


def decode_id(value: bytes | str) -> str:
    # A task id written by something else may not be UTF-8. surrogateescape
    # turns it into a str that _wire turns back into the same bytes.
    return value.decode(errors="surrogateescape") if isinstance(value, bytes) else value


def _wire(value: Any) -> Any:
    # Encoded here because redis-py's hiredis packer encodes str strictly.
    return value.encode(errors="surrogateescape") if isinstance(value, str) else value


@dataclass(frozen=True)
class ClaimedTask:
    """A task leased to a worker by the claim script.

    Attributes:
        task_id: Id of the task.
        claim: "<fencing token>:<worker id>"; later calls must present it.
        message: The encoded TaskMessage.
        retries: Times the task was already retried after unhealthy failures.
        crashes: Times the task was already delivered again after a crash.
        high_priority: True if it came from the high-priority queue.
    """

    task_id: str
    claim: str
    message: bytes
    retries: int
    crashes: int
    high_priority: bool

    @classmethod
    def from_reply(cls, reply: list[Any]) -> ClaimedTask:
        task_id, claim, message, retries, crashes, priority = reply
        return cls(
            decode_id(task_id),
            decode_id(claim),
            message,
            int(retries),
            int(crashes),
            priority == 1,
        )


@dataclass(frozen=True)
class FinishedTask:
    """The outcome of a claimed task, ready for the finish script.

    Attributes:
        task_id: Id of the task.
        claim: The claim the task was leased under.
        result: The encoded TaskResult.
        counter: The counter to increment: completed, failed, lost or
            dead_lettered.
        inbox: Inbox of the waiting producer, or None.
        dead_letter: An encoded DeadLetter entry to push, or None.
        fresh: The claim found no retry or crash counts, so finish has none
            to clear.
    """

    task_id: str
    claim: str
    result: bytes
    counter: str
    inbox: str | None = None
    dead_letter: bytes | None = None
    fresh: bool = False


@dataclass(frozen=True)
class OrphanedTask:
    """A task released from a dead worker that must be failed, not run again.

    Attributes:
        task_id: Id of the task.
        claim: The releaser's claim on it, needed to record the failure.
        message: The encoded TaskMessage.
        crashes: Crash re-deliveries so far, this one included.
    """

    task_id: str
    claim: str
    message: bytes
    crashes: int

    @classmethod
    def from_reply(cls, reply: list[Any]) -> OrphanedTask:
        task_id, claim, message, crashes = reply
        return cls(decode_id(task_id), decode_id(claim), message, int(crashes))


@dataclass(frozen=True)
class QueueCounts:
    """Sizes of a queue's keys as read in one script call."""

    normal: int
    high: int
    in_flight: int
    workers_alive: int
    dead_letters: int
    counters: dict[str, int]


class QueueScripts:
    """Calls the queue's Lua scripts on one Redis client.

    Script objects send EVALSHA and load the script again after NOSCRIPT, so
    calls keep working after a Redis restart flushed the script cache. The
    calls on every task's path use DirectConnections instead of redis-py's client.
    """

    def __init__(
        self, client: redis.Redis, keys: QueueKeys, *, keep_connections: bool = False
    ) -> None:
        """Prepare the scripts. Nothing is sent before the first call.

        Args:
            client: The client to call the scripts on.
            keys: The queue's key names.
            keep_connections: Keep the hot calls' connections out of the
                client's pool between calls (see DirectConnections). Only
                for a client whose pool tasker created, since the kept
                connections do not count as free there.
        """
        self.client = client
        self.keys = keys
        self.direct = DirectConnections(client, keep=keep_connections)
        self._fixed = [keys.prefix]
        self._wire_prefix = _wire(keys.prefix)
        # Set when Redis replied NOSCRIPT to enqueue_and_wait on a
        # connection that stayed up, so that the next call loads the script.
        self._enqueue_missing = False
        self._scripts = {
            name: client.register_script(_build_script(name))
            for name in (
                "enqueue",
                "claim",
                "finish",
                "retry",
                "release",
                "recover",
                "heartbeat",
                "stats",
                "takeover",
                "metrics",
                "reclaim",
                "requeue_dead",
                "purge_queue",
            )
        }

    def _call(
        self,
        name: str,
        extra_keys: list[str],
        args: list[Any],
        client: Any = None,
    ) -> Any:
        script = self._scripts[name]
        return script(
            keys=[_wire(key) for key in self._fixed + extra_keys],
            args=[_wire(arg) for arg in args],
            client=client,
        )

    def _run_direct(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """Run a script on a direct connection, loading it again after NOSCRIPT."""
        script = self._scripts[name]
        command = (b"EVALSHA", script.sha, len(keys), *keys, *args)
        (reply,) = self.direct.execute(command)
        if isinstance(reply, redis.exceptions.NoScriptError):
            self.client.script_load(script.script)
            (reply,) = self.direct.execute(command)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        """Give the direct connections back to the client's pool."""
        self.direct.close()

    def enqueue(
        self,
        messages: list[tuple[str, bytes]],
        *,
        high_priority: bool,
        once: bool,
        client: Any = None,
    ) -> int | None:
        """Queue (task id, encoded message) pairs; return how many were new.

        With a pipeline as client, the call is only added to it and None is
        returned.
        """
        keys, args = self._enqueue_arguments(messages, high_priority, once)
        reply = self._scripts["enqueue"](keys=keys, args=args, client=client)
        return None if client is not None else int(reply)

    def _enqueue_arguments(
        self, messages: list[tuple[str, bytes]], high_priority: bool, once: bool
    ) -> tuple[list[bytes], list[Any]]:
        # The keys and arguments are built as bytes here, not through _call,
        # because this loop runs once per task and _call converts each value.
        result_prefix = _wire(self.keys.result(""))
        keys = [_wire(key) for key in self._fixed]
        args: list[Any] = [
            b"1" if high_priority else b"0",
            b"1" if once else b"0",
            METRICS_SLOT_MS,
            METRICS_TTL_MS,
        ]
        for task_id, message in messages:
            wire_id = _wire(task_id)
            keys.append(result_prefix + wire_id)
            args.append(wire_id)
            args.append(message)
        return keys, args

    def enqueue_and_wait(
        self,
        task_id: str,
        message: bytes,
        *,
        high_priority: bool,
        once: bool,
        block_timeout: float,
    ) -> bytes | None:
        """Queue one task and block on its result key, in one round trip.

        The enqueue script and a BLMOVE of the result key onto itself go out
        together in a pipeline, so Redis starts the wait as soon as the task
        is queued.

        The wait runs even if Redis lacks the script, so the script goes out
        as SCRIPT LOAD in the same write whenever the connection may lead to
        a server without it: on its first use here, after it reconnected
        (a restart empties Redis's script cache), on a resend, and after a
        NOSCRIPT reply.

        Returns:
            The encoded result, or None if none came within block_timeout.

        Raises:
            redis.exceptions.NoScriptError: Redis lost the enqueue script
                while the connection stayed up (SCRIPT FLUSH), so the task is
                not queued and the BLMOVE waited block_timeout. enqueue()
                loads the script again.
        """
        keys, args = self._enqueue_arguments([(task_id, message)], high_priority, once)
        result_key = keys[-1]
        script = self._scripts["enqueue"]
        queued, data = self.direct.execute(
            (b"EVALSHA", script.sha, len(keys), *keys, *args),
            (b"BLMOVE", result_key, result_key, b"LEFT", b"LEFT", block_timeout),
            setup=(b"SCRIPT", b"LOAD", script.script),
            setup_first=self._enqueue_missing,
        )
        self._enqueue_missing = isinstance(queued, redis.exceptions.NoScriptError)
        for reply in (queued, data):
            if isinstance(reply, Exception):
                raise reply
        return data  # type: ignore[no-any-return]

    def enqueue_pipelined(
        self,
        messages: list[tuple[str, bytes]],
        *,
        high_priority: bool,
        once: bool,
        batch_size: int = ENQUEUE_BATCH,
    ) -> None:
        """Queue many tasks in one round trip, batch_size per script call."""
        for attempt in range(2):
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for start in range(0, len(messages), batch_size):
                        self.enqueue(
                            messages[start : start + batch_size],
                            high_priority=high_priority,
                            once=once,
                            client=pipe,
                        )
                    pipe.execute()
                return
            except redis.exceptions.NoScriptError:
                # A resend reached a restarted server without the scripts; a
                # new pipeline loads them again. Enqueueing is idempotent.
                if attempt:
                    raise

    def claim(
        self, worker_id: str, lease_ms: int, count: int, call_number: int | str = ""
    ) -> list[ClaimedTask]:
        """Lease up to count tasks to a worker, high priority first.

        A call_number not above the worker's previous one leases nothing.
        """
        reply = self._call("claim", [], [worker_id, lease_ms, count, call_number])
        return [ClaimedTask.from_reply(item) for item in reply]

    def wait_and_claim(
        self,
        worker_id: str,
        lease_ms: int,
        count: int,
        call_number: int,
        *,
        block_timeout: float,
    ) -> list[ClaimedTask] | None:
        """Block on the wake-up list, then claim, in one round trip.

        The BLPOP and the claim go out together in one write. Redis runs the
        claim as soon as the BLPOP returns, with a token or at its timeout, so
        the wake-up and the claim cost one round trip instead of two.

        Returns:
            The claimed tasks, or None if Redis lost the claim script (after a
            restart); then call claim(), which loads it again.
        """
        _, reply = self.direct.execute(
            (b"BLPOP", self.keys.wake, block_timeout),
            (
                b"EVALSHA",
                self._scripts["claim"].sha,
                1,
                self._wire_prefix,
                _wire(worker_id),
                lease_ms,
                count,
                call_number,
            ),
        )
        if isinstance(reply, redis.exceptions.NoScriptError):
            return None
        if isinstance(reply, Exception):
            raise reply
        return [ClaimedTask.from_reply(item) for item in reply]

    def finish(
        self,
        outcomes: list[FinishedTask],
        *,
        worker_id: str,
        lease_ms: int,
        result_ttl_ms: int,
        claim_next: int,
        put_back: Sequence[ClaimedTask] = (),
        call_number: int | str = "",
    ) -> tuple[list[bool], list[ClaimedTask]]:
        """Record outcomes, put back unstarted tasks, claim up to claim_next more.

        Returns:
            For each outcome, whether it was recorded (False if its claim was
            stale), and the newly claimed tasks.
        """
        keys: list[str] = []
        args: list[Any] = [
            worker_id,
            lease_ms,
            claim_next,
            result_ttl_ms,
            len(outcomes),
            call_number,
        ]
        for outcome in outcomes:
            result_key = self.keys.result(outcome.task_id)
            keys.extend((result_key, outcome.inbox or result_key))
            args.extend(
                (
                    outcome.task_id,
                    outcome.claim,
                    outcome.result,
                    outcome.counter,
                    "1" if outcome.inbox else "0",
                    outcome.dead_letter or b"",
                    "1" if outcome.fresh else "0",
                )
            )
        for task in put_back:
            args.extend((task.task_id, task.claim, "1" if task.high_priority else "0"))
        recorded, claimed = self._run_direct(
            "finish",
            [_wire(key) for key in self._fixed + keys],
            [_wire(arg) for arg in args],
        )
        return (
            [flag == 1 for flag in recorded],
            [ClaimedTask.from_reply(item) for item in claimed],
        )

    def retry(self, task_id: str, claim: str) -> bool:
        """Queue a claimed task again at high priority; False if the claim is stale."""
        return int(self._call("retry", [], [task_id, claim])) == 1

    def release(
        self,
        worker_id: str,
        *,
        count_crash: bool,
        max_crashes: int,
        releaser_id: str,
        lease_ms: int,
        started_token: int = -1,
        running: bool = False,
    ) -> list[OrphanedTask]:
        """Queue again the tasks a dead worker held; return those to fail instead.

        started_token and running come from the worker's RunningTaskSlot; see
        release.lua for how they decide which task counts a crash.
        """
        reply = self._call(
            "release",
            [self.keys.worker_info(worker_id)],
            [
                worker_id,
                "1" if count_crash else "0",
                max_crashes,
                releaser_id,
                lease_ms,
                started_token,
                "1" if running else "0",
            ],
        )
        return [OrphanedTask.from_reply(item) for item in reply]

    def reclaim(self, worker_id: str, known: list[str]) -> int:
        """Put back tasks leased to worker_id that are not in known; return how many."""
        return int(self._call("reclaim", [], [worker_id, *known]))

    def add_metrics(self, args: list[Any]) -> None:
        """Add task counts to the current metrics slot (see metrics.py)."""
        self._call("metrics", [], args)

    def takeover(
        self, task_id: str, worker_id: str, *, releaser_id: str, lease_ms: int
    ) -> OrphanedTask | None:
        """Lease a task to the releaser if worker_id still holds it."""
        reply = self._call("takeover", [], [task_id, worker_id, releaser_id, lease_ms])
        return OrphanedTask.from_reply(reply) if reply else None

    def recover(
        self,
        *,
        max_crashes: int,
        releaser_id: str,
        lease_ms: int,
        limit: int,
        worker_silence_ms: int,
    ) -> list[OrphanedTask]:
        """Release tasks with expired leases; return those to fail instead."""
        reply = self._call(
            "recover",
            [],
            [max_crashes, releaser_id, lease_ms, limit, worker_silence_ms],
        )
        return [OrphanedTask.from_reply(item) for item in reply]

    def heartbeat(
        self,
        worker_id: str,
        *,
        lease_ms: int,
        info_ttl_ms: int,
        current_task: str,
        leases: list[tuple[str, str]],
    ) -> int:
        """Mark a worker alive and extend its leases; return server time in ms."""
        args: list[Any] = [worker_id, lease_ms, info_ttl_ms, current_task]
        for task_id, claim in leases:
            args.extend((task_id, claim))
        return int(self._call("heartbeat", [self.keys.worker_info(worker_id)], args))

    def counts(self, alive_window_ms: int) -> QueueCounts:
        """Read queue depths, live workers and counters in one call."""
        normal, high, in_flight, alive, dead, counters = self._call(
            "stats", [], [alive_window_ms]
        )
        pairs = iter(counters)
        return QueueCounts(
            normal=int(normal),
            high=int(high),
            in_flight=int(in_flight),
            workers_alive=int(alive),
            dead_letters=int(dead),
            counters={
                decode_id(key): int(value)
                for key, value in zip(pairs, pairs, strict=True)
            },
        )
