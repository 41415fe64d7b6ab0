"""The worker loop of one process: claim tasks, run them, record the outcomes."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time
import traceback
from collections import deque
from contextlib import AbstractContextManager
from typing import Any

import redis

from tasker_redis import metrics, registry, scripts
from tasker_redis import serialization as ser
from tasker_redis.config import Config
from tasker_redis.connection import CONNECTION_ERRORS, Backoff, create_client
from tasker_redis.context import TaskContext
from tasker_redis.errors import TaskNotRegistered
from tasker_redis.isolation import TaskGate
from tasker_redis.keys import QueueKeys
from tasker_redis.outcomes import Outcome, Outcomes, preview
from tasker_redis.pool import destroy_quietly, resource_is_healthy
from tasker_redis.recovery import recover_expired, release_worker
from tasker_redis.reports import Reporter, TaskReport
from tasker_redis.scripts import ClaimedTask, FinishedTask, QueueScripts
from tasker_redis.slot import RunningTaskSlot

logger = logging.getLogger(__name__)

# Exit codes of a worker process, read by the supervisor.
EXIT_OK = 0
EXIT_STARTUP_FAILED = 3
EXIT_RESOURCE_FAILED = 4

# Seconds between flushes of a worker's task metrics to Redis.
METRICS_FLUSH_INTERVAL = 1.0

# Seconds before a failed heartbeat is tried again.
HEARTBEAT_RETRY_DELAY = 0.1

# While a backlog exists a worker claims several tasks per round trip: as
# many as it expects to run within BATCH_WINDOW seconds at its recent average
# run time, at most MAX_BATCH. A batch that runs past its window puts its
# unstarted tasks back and claims again, so a high-priority task waits for
# at most about one window of other work, plus the task that was running.
BATCH_WINDOW = 0.005
MAX_BATCH = 32


class Worker:
    """Runs tasks one at a time with one resource, until asked to stop.

    A worker process runs one Worker per thread (see worker_process.py).

    A heartbeat thread extends the leases of the task being run and releases
    tasks whose leases expired elsewhere, so no separate recovery daemon is
    needed.
    """

    def __init__(
        self,
        config: Config,
        worker_id: str,
        *,
        client: redis.Redis | None = None,
        slot: RunningTaskSlot | None = None,
        recovers: bool = True,
        gate: TaskGate | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        """Prepare a worker; nothing runs before run().

        Args:
            config: Queue and worker settings.
            worker_id: The id this worker claims tasks under.
            client: Redis client; by default one made from the config.
            slot: Shared memory where the worker publishes its running task.
            recovers: Whether the heartbeat also releases expired leases.
            gate: Shared by the threads of one worker process, so that a task
                charged a crash runs alone.
            stopping: Event shared by the threads of one worker process, so
                that a stop of one stops every one.
        """
        self.config = config
        self.worker_id = worker_id
        self.keys = QueueKeys(config.queue)
        # No silent resends: a resent claim would lease tasks whose first
        # reply was lost. The loops below retry and call _reclaim instead.
        self.client = (
            client
            if client is not None
            else create_client(config, name=f"tasker-worker-{worker_id}", resend=False)
        )
        self.scripts = QueueScripts(
            self.client, self.keys, keep_connections=client is None
        )
        self.exit_code = EXIT_OK
        self._outcomes = Outcomes(worker_id, config.max_payload_size)
        # Without a supervisor the slot is only read by _release_claims.
        self._slot = slot if slot is not None else RunningTaskSlot(multiprocessing)
        # One thread of a worker process is enough to release expired leases.
        self._recovers = recovers
        self._gate = gate
        self._resource: Any = None
        # _stopping ends claiming; _heartbeat_done ends the heartbeat, which
        # must go on extending leases while the last tasks finish.
        self._stopping = stopping if stopping is not None else threading.Event()
        self._heartbeat_done = threading.Event()
        self._claims: dict[str, str] = {}
        self._claims_lock = threading.Lock()
        self._running_task = ""
        self._metrics = metrics.MetricsRecorder()
        self._batch: deque[ClaimedTask] = deque()
        # Log lines and metrics of tasks run, handed to the reporter once
        # their results are in Redis so that neither delays a result.
        self._reports: list[TaskReport] = []
        self._reporter = Reporter(config.queue, self._metrics, config.metrics_collector)
        self._reclaim_due = False
        # Numbers this worker's claim and finish calls; see accept_call in lib.lua.
        self._call_number = 0
        self._batch_deadline = 0.0
        self._average_run: float | None = None
        self._lease_ms = int(config.lease_timeout * 1000)
        self._result_ttl_ms = int(config.result_ttl * 1000)

    # Life cycle

    def run(self) -> int:
        """Create the resource, run tasks until stopped, destroy the resource.

        Returns:
            The process exit code: 0 after a graceful stop.
        """
        try:
            self._resource = self.config.on_create()
        except Exception:
            logger.exception(
                "worker %s: on_create failed; exiting without claiming tasks",
                self.worker_id,
            )
            return EXIT_STARTUP_FAILED

        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="tasker-heartbeat", daemon=True
        )
        crashed = True
        try:
            self._register()
            heartbeat.start()
            self._loop()
            crashed = False
        finally:
            self._stopping.set()
            self._heartbeat_done.set()
            if heartbeat.is_alive():
                heartbeat.join(timeout=self.config.socket_timeout)
            self._release_claims(crashed=crashed)
            self._reporter.close(timeout=self.config.socket_timeout)
            self._flush_metrics()
            destroy_quietly(self.config.on_destroy, self._resource)
            self._deregister()
        return self.exit_code

    def request_stop(self) -> None:
        """Stop after the running task; an idle worker stops within block_timeout."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stopping.is_set()

    def _register(self) -> None:
        self.client.hset(
            self.keys.worker_info(self.worker_id),
            mapping={
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queue": self.config.queue,
                "started_at": time.time(),
            },
        )
        self._beat()

    def _deregister(self) -> None:
        try:
            with self.client.pipeline() as pipe:
                pipe.zrem(self.keys.workers, self.worker_id)
                pipe.delete(self.keys.worker_info(self.worker_id))
                pipe.execute()
        except CONNECTION_ERRORS as exc:
            logger.warning("worker %s could not deregister: %s", self.worker_id, exc)

    # The loop

    def _loop(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            if self._reclaim_due:
                self._reclaim()
            try:
                if self._batch:
                    self._run_batch()
                else:
                    self._claim_or_wait()
                backoff.reset()
            except CONNECTION_ERRORS as exc:
                delay = backoff.next_delay()
                logger.error(
                    "worker %s lost the Redis connection to %s: %s; retrying in %.2f s",
                    self.worker_id,
                    self.config.masked_redis_url,
                    exc,
                    delay,
                )
                self._stopping.wait(delay)
                self._reclaim_due = True

    def _next_call(self) -> int:
        self._call_number += 1
        return self._call_number

    def _reclaim(self) -> None:
        """Put back tasks a claim leased to this worker in a reply that was lost.

        Until it succeeds, _reclaim_due stays set and the loop calls it again.
        """
        with self._claims_lock:
            known = list(self._claims)
        try:
            returned = self.scripts.reclaim(self.worker_id, known)
        except CONNECTION_ERRORS as exc:
            logger.debug(
                "worker %s could not check its leases yet: %s", self.worker_id, exc
            )
            return
        self._reclaim_due = False
        if returned:
            logger.warning(
                "worker %s put back %d tasks leased to it by a claim whose reply "
                "was lost",
                self.worker_id,
                returned,
            )

    def _claim_or_wait(self) -> None:
        # Queued tasks never outnumber wake tokens, so the wait returns at once
        # while tasks are queued, and as soon as one is queued otherwise. The
        # claim runs at the timeout too, which bounds how long a stop request
        # waits and picks up any task whose token was lost.
        claimed: list[ClaimedTask] | None = self.scripts.wait_and_claim(
            self.worker_id,
            self._lease_ms,
            self._batch_size(),
            self._next_call(),
            block_timeout=self.config.block_timeout,
        )
        if claimed is None:
            claimed = self.scripts.claim(
                self.worker_id, self._lease_ms, self._batch_size(), self._next_call()
            )
        if claimed:
            self._accept(claimed)

    def _accept(self, claimed: list[ClaimedTask]) -> None:
        with self._claims_lock:
            for task in claimed:
                self._claims[task.task_id] = task.claim
        self._batch.extend(claimed)
        self._batch_deadline = time.monotonic() + BATCH_WINDOW

    def _batch_size(self) -> int:
        if self._average_run is None:
            return 1
        fitting = int(BATCH_WINDOW / max(self._average_run, 1e-6))
        return max(1, min(MAX_BATCH, fitting))

    def _run_batch(self) -> None:
        try:
            self._run_and_record()
        finally:
            self._hand_over_reports()

    def _run_and_record(self) -> None:
        finished: list[FinishedTask] = []
        while self._batch and not self._stopping.is_set():
            if finished and time.monotonic() > self._batch_deadline:
                break
            task = self._batch.popleft()
            with self._enter_gate(task):
                started = time.perf_counter()
                outcome = self._execute(task)
                self._observe(time.perf_counter() - started)
            if outcome.result is None:
                self._queue_again(task)
                continue
            finished.append(
                FinishedTask(
                    task.task_id,
                    task.claim,
                    outcome.result,
                    outcome.counter,
                    outcome.reply_to,
                    outcome.dead_letter,
                    fresh=task.retries == 0 and task.crashes == 0,
                )
            )

        # Unstarted tasks go back when stopping, or when the batch overran its
        # window, so that the next claim can take high-priority tasks first.
        put_back = list(self._batch)
        self._batch.clear()
        claim_next = 0 if self._stopping.is_set() else self._batch_size()
        claimed = self._record(finished, put_back, claim_next)
        if claimed:
            self._accept(claimed)

    def _enter_gate(self, task: ClaimedTask) -> AbstractContextManager[None]:
        if self._gate is None:
            return contextlib.nullcontext()
        return self._gate.enter(alone=task.crashes > 0)

    def _observe(self, seconds: float) -> None:
        if self._average_run is None:
            self._average_run = seconds
        else:
            self._average_run = 0.8 * self._average_run + 0.2 * seconds

    # Running one task

    def _execute(self, task: ClaimedTask) -> Outcome:
        prepared = self._prepare(task)
        if isinstance(prepared, Outcome):
            return prepared
        message, found = prepared
        timeout = message.timeout or found.timeout
        context = TaskContext(
            task_id=task.task_id,
            attempt=1 + task.retries + task.crashes,
            high_priority=task.high_priority,
            queue=self.config.queue,
            worker_id=self.worker_id,
            deadline=time.monotonic() + timeout if timeout else None,
        )
        wait = (
            max(0.0, time.time() - message.enqueued_at) if message.enqueued_at else 0.0
        )
        # One INFO line per task, written by the reporter thread once the
        # result is in Redis, because a line costs about 0.05 ms (a tenth of a
        # round trip) and a log handler may stall.
        # `tasker stats` shows the task each worker is running.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "task %s %s started, arguments: %s %s",
                task.task_id,
                message.name,
                preview(message.args),
                preview(message.kwargs),
            )

        started = time.perf_counter()
        outcome = self._call(task, message, found, context)
        duration = time.perf_counter() - started
        self._reports.append(
            TaskReport(
                task.task_id, message.name, outcome, duration, wait, context.attempt
            )
        )
        return outcome

    def _hand_over_reports(self) -> None:
        """Hand the reports of the tasks run since the last call to the reporter."""
        reports, self._reports = self._reports, []
        self._reporter.add(reports)

    def _prepare(
        self, task: ClaimedTask
    ) -> Outcome | tuple[ser.TaskMessage, registry.Task[Any]]:
        try:
            message = ser.TaskMessage.decode(task.message)
        except Exception as exc:  # any decode failure must not crash the worker
            return self._outcomes.dead_letter(
                task, f"malformed message: {exc}", reply_to=None
            )
        if not self.keys.is_inbox(message.reply_to):
            # A worker pushes results to reply_to, so a message from outside
            # the library must not name an arbitrary key there.
            return self._outcomes.dead_letter(
                task,
                f"malformed message: reply_to {message.reply_to!r} is not an inbox "
                f"of queue {self.config.queue!r}",
                reply_to=None,
            )
        try:
            found = registry.lookup(message.name)
        except TaskNotRegistered as exc:
            return self._outcomes.dead_letter(
                task,
                str(exc),
                reply_to=message.reply_to,
                kind=ser.NOT_REGISTERED,
                task_name=message.name,
            )
        return message, found

    def _call(
        self,
        task: ClaimedTask,
        message: ser.TaskMessage,
        found: registry.Task[Any],
        context: TaskContext,
    ) -> Outcome:
        self._running_task = task.task_id
        self._slot.start(task.task_id, task.claim, context.deadline)
        try:
            value = found.function(
                context, self._resource, *message.args, **message.kwargs
            )
        except Exception as exc:
            self._slot.stop()
            if context.deadline is not None and time.monotonic() >= context.deadline:
                return self._outcomes.timed_out(task, message, exc)
            return self._failure(task, message, exc)
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt from the task leaves the slot
            # marked running, so the release that follows charges this task
            # the crash.
            logger.error(
                "task %s %s raised %s(%r); worker %s stops and the task counts a crash",
                task.task_id,
                message.name,
                type(exc).__name__,
                getattr(exc, "code", None),
                self.worker_id,
            )
            raise
        finally:
            self._running_task = ""
        self._slot.stop()
        return self._outcomes.success(task, message, value)

    def _failure(
        self, task: ClaimedTask, message: ser.TaskMessage, exc: Exception
    ) -> Outcome:
        error_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        details = traceback.format_exc()
        if resource_is_healthy(self.config.check_health, exc):
            logger.warning(
                "task %s %s raised %s: %s", task.task_id, message.name, error_type, exc
            )
            result = self._outcomes.error(
                task, ser.FAILED, error_type, str(exc), details
            )
            return Outcome(result, scripts.FAILED, "failed", message.reply_to)

        self._replace_resource()
        if message.once:
            text = (
                f"at-most-once task {task.task_id} failed on an unhealthy resource "
                f"and is not retried: {type(exc).__name__}: {exc}"
            )
            result = self._outcomes.error(task, ser.FAILED, error_type, text, details)
            return Outcome(result, scripts.FAILED, "failed", message.reply_to)
        if task.retries < self.config.max_retries:
            logger.warning(
                "task %s %s failed on an unhealthy resource (%s: %s); queued again "
                "at high priority (retry %d of %d)",
                task.task_id,
                message.name,
                error_type,
                exc,
                task.retries + 1,
                self.config.max_retries,
            )
            return Outcome(None, "retried", "retried")
        text = (
            f"task {task.task_id} ({message.name}) failed on an unhealthy resource "
            f"{task.retries + 1} times, more than max_retries "
            f"({self.config.max_retries}); last error: {type(exc).__name__}: {exc}"
        )
        result = self._outcomes.error(task, ser.MAX_RETRIES, error_type, text, details)
        return Outcome(result, scripts.FAILED, "failed", message.reply_to)

    def _replace_resource(self) -> None:
        destroy_quietly(self.config.on_destroy, self._resource)
        self._resource = None
        try:
            self._resource = self.config.on_create()
        except Exception:
            logger.exception(
                "worker %s: on_create failed while replacing an unhealthy resource; "
                "the worker exits after recording this task",
                self.worker_id,
            )
            self.exit_code = EXIT_RESOURCE_FAILED
            self._stopping.set()
        else:
            logger.warning("worker %s replaced its unhealthy resource", self.worker_id)

    # Recording outcomes

    def _record(
        self,
        finished: list[FinishedTask],
        put_back: list[ClaimedTask],
        claim_next: int,
    ) -> list[ClaimedTask]:
        backoff = Backoff()
        resent = False
        while True:
            try:
                recorded, claimed = self.scripts.finish(
                    finished,
                    worker_id=self.worker_id,
                    lease_ms=self._lease_ms,
                    result_ttl_ms=self._result_ttl_ms,
                    claim_next=claim_next,
                    put_back=put_back,
                    call_number=self._next_call(),
                )
                break
            except CONNECTION_ERRORS as exc:
                # The results are computed: keep them and retry rather than
                # let the leases expire and the tasks run again.
                delay = backoff.next_delay()
                logger.error(
                    "worker %s could not record %d results: %s; retrying in %.2f s",
                    self.worker_id,
                    len(finished),
                    exc,
                    delay,
                )
                time.sleep(delay)
                resent = True

        if resent:
            # The lost first call may have claimed tasks too; the loop puts
            # them back once the tasks of this call are accepted.
            self._reclaim_due = True
        self._slot.reset()
        with self._claims_lock:
            for done in finished:
                self._claims.pop(done.task_id, None)
            for task in put_back:
                self._claims.pop(task.task_id, None)
        for done, was_recorded in zip(finished, recorded, strict=True):
            # After a resend, a result the lost first call recorded reads as
            # rejected, so the warning is only certain on a first call.
            if not was_recorded and not resent:
                logger.warning(
                    "task %s: result rejected because the lease expired and another "
                    "worker took the task over",
                    done.task_id,
                )
        return claimed

    def _queue_again(self, task: ClaimedTask) -> None:
        if not self.scripts.retry(task.task_id, task.claim):
            logger.warning(
                "task %s: retry rejected because the lease expired and another "
                "worker took the task over",
                task.task_id,
            )
        self._unhold(task)

    def _unhold(self, task: ClaimedTask) -> None:
        with self._claims_lock:
            self._claims.pop(task.task_id, None)

    def _release_claims(self, *, crashed: bool) -> None:
        """Put back the tasks still leased to this worker as it exits.

        After a graceful stop these never started and all go back. If the
        loop ended with an exception, the running task counts a crash, so a
        task that raises SystemExit is dead-lettered after max_crashes.
        """
        with self._claims_lock:
            holding = bool(self._claims)
        if not holding:
            return
        started_token, running = self._slot.started()
        try:
            release_worker(
                self.scripts,
                self.config,
                self.worker_id,
                releaser_id=self.worker_id,
                crashed=crashed,
                started_token=started_token,
                running=running,
            )
        except CONNECTION_ERRORS as exc:
            logger.warning(
                "worker %s could not release its claimed tasks (%s); they return "
                "to the queue when their lease expires",
                self.worker_id,
                exc,
            )

    # Heartbeat and recovery

    def _heartbeat_loop(self) -> None:
        parent = os.getppid()
        next_beat = time.monotonic() + self.config.heartbeat_interval
        next_flush = time.monotonic() + METRICS_FLUSH_INTERVAL
        # After a failed beat the leases have less time left, so the first
        # retry comes soon; further ones back off up to the beat interval.
        backoff = Backoff(
            base=HEARTBEAT_RETRY_DELAY, cap=self.config.heartbeat_interval
        )
        while not self._heartbeat_done.wait(
            max(0.0, min(next_beat, next_flush) - time.monotonic())
        ):
            if time.monotonic() >= next_beat:
                delay = self.config.heartbeat_interval
                if self._heartbeat(parent, backoff):
                    backoff.reset()
                else:
                    delay = backoff.next_delay()
                next_beat = time.monotonic() + delay
            if time.monotonic() >= next_flush:
                self._flush_metrics()
                next_flush = time.monotonic() + METRICS_FLUSH_INTERVAL

    def _heartbeat(self, parent: int, backoff: Backoff) -> bool:
        """Beat once and recover expired leases; return False on a Redis error."""
        if os.getppid() != parent and not self._stopping.is_set():
            logger.warning(
                "worker %s: its supervisor exited; stopping after the current task",
                self.worker_id,
            )
            self._stopping.set()
        try:
            self._beat()
            if self._recovers:
                recover_expired(self.scripts, self.config, self.worker_id)
        except CONNECTION_ERRORS as exc:
            # One line per outage, not one per retry.
            if not backoff.failures:
                logger.error(
                    "worker %s heartbeat failed: %s; retrying with backoff up to "
                    "%.2f s",
                    self.worker_id,
                    exc,
                    self.config.heartbeat_interval,
                )
            return False
        except Exception:
            logger.exception("worker %s heartbeat failed", self.worker_id)
            return False
        return True

    def _flush_metrics(self) -> None:
        try:
            self._metrics.flush(self.scripts)
        except CONNECTION_ERRORS as exc:
            logger.debug(
                "worker %s kept its metrics for later: %s", self.worker_id, exc
            )
        except redis.RedisError:
            logger.exception("worker %s could not record its metrics", self.worker_id)

    def _beat(self) -> None:
        with self._claims_lock:
            claims = list(self._claims.items())
        self.scripts.heartbeat(
            self.worker_id,
            lease_ms=self._lease_ms,
            info_ttl_ms=self._lease_ms * 3,
            current_task=self._running_task,
            leases=claims,
        )
