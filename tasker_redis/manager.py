"""TaskManager: queues tasks, waits for their results and runs tasks locally."""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import redis

from tasker_redis import metrics, scripts
from tasker_redis.config import Config
from tasker_redis.connection import (
    CONNECTION_ERRORS,
    Backoff,
    check_server,
    create_client,
)
from tasker_redis.context import TaskContext
from tasker_redis.errors import (
    MaxRetriesExceeded,
    RedisUnavailableError,
    ShuttingDownError,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.metrics import TaskMetrics
from tasker_redis.pool import ResourcePool, resource_is_healthy
from tasker_redis.registry import Task, check_timeout, lookup, resolve
from tasker_redis.results import ResultListener, TaskFuture, unwrap, wait_for_result
from tasker_redis.sender import (
    PendingTask,
    Sender,
    resends_allowed,
    stop_resending_at,
)
from tasker_redis.serialization import MessageTemplate, TaskMessage, TaskResult
from tasker_redis.stats import TaskStats

logger = logging.getLogger(__name__)

R = TypeVar("R")
TaskRef = Task[Any] | str
ResultCallback = Callable[[Any, BaseException | None], None]

# Seconds between flushes of run_task metrics to Redis, at the most.
LOCAL_METRICS_FLUSH_INTERVAL = 1.0


class TaskManager:
    """Queues tasks for `tasker worker` processes and runs tasks locally.

    A manager is thread-safe. It connects to Redis when created; it starts a
    result-listener thread on the first queued task and creates run_task
    resources on the first run_task call.

    Use it as a context manager, or call stop() (graceful) or kill()
    (immediate) when done.
    """

    def __init__(self, config: Config, *, client: redis.Redis | None = None) -> None:
        """Connect to config.redis_url.

        Args:
            config: Queue settings.
            client: A Redis client to use instead of one built from config.

        Raises:
            RedisUnavailableError: The server cannot be reached.
        """
        self.config = config
        self.id = uuid.uuid4().hex
        self.keys = QueueKeys(config.queue)
        self._owns_client = client is None
        # Without safe resends (a short result_ttl), the client makes none
        # of its own either.
        self._client = (
            client
            if client is not None
            else create_client(config, resend=resends_allowed(config))
        )
        check_server(self._client, config)
        self._scripts = scripts.QueueScripts(
            self._client, self.keys, keep_connections=self._owns_client
        )
        # The listener pops results, so it needs a client that never resends
        # a BLPOP whose reply was lost; it rereads result keys instead.
        listen_client = (
            create_client(config, name="tasker-results", resend=False)
            if client is None
            else client
        )
        self._listener = ResultListener(
            listen_client, self.keys, self.id, config.block_timeout
        )
        self._sender = Sender(self._scripts, config)
        # Contexts of run_task calls under way, which kill() cancels.
        self._running_contexts: dict[str, TaskContext] = {}
        self._metrics = metrics.MetricsRecorder()
        self._metrics_flushed = time.monotonic()
        _open_managers.add(self)
        self._pool: ResourcePool | None = None
        self._pool_lock = threading.Lock()
        self._stopping = False
        self._killed = False
        # Set with _killed; wakes callers pausing between attempts to queue.
        self._killed_event = threading.Event()
        self._waiters = 0
        self._waiters_lock = threading.Lock()

    def __enter__(self) -> TaskManager:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.stop()
            return
        # Leaving on an error, such as Ctrl-C, must not wait for every result:
        # send what is buffered, then wake the waiters.
        self.flush(EXIT_FLUSH_TIMEOUT)
        self.kill()

    # Queueing

    def submit(
        self,
        task: TaskRef,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        high_priority: bool = False,
        once: bool = False,
        timeout: float | None = None,
    ) -> TaskFuture:
        """Queue a task without waiting and return a future for its result.

        Every `_async` and `_with_callback` variant calls this. The arguments
        are checked and encoded here, so a task with a bad argument is never
        queued. The task itself is handed to a sender thread that queues
        buffered tasks in batches: it reaches Redis within about one round
        trip, and flush() or stop() waits until it has.

        Args:
            task: A @task function or a registered task name.
            args: Positional arguments after the context and the resource.
            kwargs: Keyword arguments.
            high_priority: Queue on the high-priority list.
            once: At-most-once: never retried, and failed with TaskLost
                rather than run again if its worker dies.
            timeout: Seconds the run may take on a worker, overriding the
                task's own timeout; past it the task fails with TaskTimeout.

        Returns:
            A future whose result is the task's value. If Redis stays
            unreachable for 30 s, it fails with RedisUnavailableError.

        Raises:
            ShuttingDownError: stop() or kill() was called.
            SerializationError: An argument cannot be encoded; the message
                names it.
            TypeError: The arguments do not fit the task's signature.
        """
        self._check_running()
        name, local = resolve(task)
        message = self._message(
            name,
            local,
            tuple(args),
            kwargs or {},
            high_priority=high_priority,
            once=once,
            timeout=check_timeout(timeout),
        )
        encoded = message.encode(self.config.max_payload_size)
        future = self._listener.register(message.task_id)
        self._sender.add(
            PendingTask(message.task_id, encoded, high_priority, once, future)
        )
        return future

    def queue_many(
        self,
        task: TaskRef,
        arguments: Iterable[Iterable[Any]],
        *,
        high_priority: bool = False,
        once: bool = False,
    ) -> list[TaskFuture]:
        """Queue one task per argument tuple and return when all are in Redis.

        The tasks go in pipelined batches of 500 per script call.

        Returns:
            One future per argument tuple, in order.

        Raises:
            SerializationError: An argument cannot be encoded. The error
                names it, and no task is queued.
            TypeError: An argument tuple does not fit the task's signature,
                and no task is queued.
            RedisUnavailableError: Redis did not acknowledge the tasks within
                the resend window (up to 30 s, see sender.stop_resending_at);
                none of the futures will complete, though some tasks may be
                queued.
            ShuttingDownError: kill() was called while Redis was unreachable.
        """
        self._check_running()
        name, local = resolve(task)
        argument_tuples = [tuple(args) for args in arguments]
        if not argument_tuples:
            return []
        if local is not None:
            _check_argument_counts(local, argument_tuples)

        # Every task of the call differs only in its id and arguments, and
        # shares one enqueued_at, so the other fields are encoded once.
        template = MessageTemplate(
            TaskMessage(
                task_id="",
                name=name,
                priority=high_priority,
                once=once,
                reply_to=self._listener.inbox,
                enqueued_at=time.time(),
            ),
            self.config.max_payload_size,
        )
        task_ids = _new_task_ids(len(argument_tuples))
        messages = [
            (task_id, template.encode(task_id, args))
            for task_id, args in zip(task_ids, argument_tuples, strict=True)
        ]

        futures = self._listener.register_many(task_ids)
        try:
            self._send_until_acknowledged(
                lambda: self._scripts.enqueue_pipelined(
                    messages, high_priority=high_priority, once=once
                ),
                f"{len(messages)} tasks ({name!r})",
                first_sent=time.monotonic(),
            )
        except (RedisUnavailableError, ShuttingDownError):
            for future in futures:
                future.cancel()
            raise
        return futures

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every task submitted without waiting is in Redis.

        Returns:
            False if timeout seconds passed first.
        """
        return self._sender.flush(timeout)

    def _message(
        self,
        name: str,
        local: Task[Any] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        high_priority: bool,
        once: bool,
        reply: bool = True,
        timeout: float | None = None,
    ) -> TaskMessage:
        if local is not None:
            local.check_arguments(args, kwargs)
        return TaskMessage(
            task_id=os.urandom(16).hex(),
            name=name,
            args=args,
            kwargs=kwargs,
            priority=high_priority,
            once=once,
            reply_to=self._listener.inbox if reply else None,
            enqueued_at=time.time(),
            timeout=timeout,
        )

    def _send_until_acknowledged(
        self,
        send: Callable[[], object],
        label: str,
        *,
        first_sent: float,
        task_id: str = "",
        error: Exception | None = None,
    ) -> None:
        """Call send, and again after each connection error, until Redis acknowledges.

        send must queue tasks by id, which is idempotent: the enqueue script
        skips ids already stored. So resending is safe whether or not an
        earlier attempt queued them, as long as the result of a task that
        already ran has not expired. Resends ride out a Redis restart, as
        the sender thread's do for queue_task_async, and stop at
        sender.stop_resending_at.

        Args:
            send: Queues the tasks.
            label: The tasks as messages name them, such as "task <id> ('name')".
            first_sent: time.monotonic() when the tasks were first sent.
            task_id: The id for RedisUnavailableError.task_id, if one task.
            error: The connection error of a send already made, if any; the
                first call of send is then a resend.

        Raises:
            RedisUnavailableError: Redis did not acknowledge before the deadline.
            ShuttingDownError: kill() was called.
        """
        backoff = Backoff()
        deadline: float | None = None
        while True:
            if error is not None:
                if self._killed:
                    raise ShuttingDownError() from None
                now = time.monotonic()
                if deadline is None:
                    deadline = stop_resending_at(self.config, first_sent, now)
                if now >= deadline:
                    raise self._not_queued(
                        label, task_id, error, now - first_sent
                    ) from error
                delay = min(backoff.next_delay(), deadline - now)
                logger.warning(
                    "could not queue %s on Redis at %s: %s; retrying in %.2f s",
                    label,
                    self.config.masked_redis_url,
                    error,
                    delay,
                )
                if self._killed_event.wait(delay):
                    raise ShuttingDownError() from None
            try:
                send()
                return
            except CONNECTION_ERRORS as exc:
                error = exc

    def _not_queued(
        self, label: str, task_id: str, exc: Exception, seconds: float
    ) -> RedisUnavailableError:
        if task_id:
            queued = (
                f"it; if so, result({task_id!r}, timeout=...) returns its result "
                "once Redis is back"
            )
        else:
            queued = (
                "some of them, which then run once Redis is back though their "
                "futures are cancelled"
            )
        return RedisUnavailableError(
            f"could not queue {label} on Redis at {self.config.masked_redis_url} "
            f"for {seconds:.1f} s: {exc}; check that the server is running. An "
            f"attempt whose reply was lost may have queued {queued}",
            task_id=task_id,
        )

    def _queue_and_wait(
        self,
        task: TaskRef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        high_priority: bool = False,
        once: bool = False,
    ) -> Any:
        if not self._sender.idle:
            # Keep this thread's earlier async tasks ahead of this one.
            return self.submit(
                task, args, kwargs, high_priority=high_priority, once=once
            ).result()
        self._check_running()
        name, local = resolve(task)
        message = self._message(
            name,
            local,
            args,
            kwargs,
            high_priority=high_priority,
            once=once,
            reply=False,
        )
        encoded = message.encode(self.config.max_payload_size)
        # The caller's own thread sends the task and blocks on its result
        # key, which saves two thread hops per call over the async path, and
        # the first wait goes out with the task, which saves a round trip.
        first_sent = time.monotonic()
        with self._waiting():
            try:
                data = self._scripts.enqueue_and_wait(
                    message.task_id,
                    encoded,
                    high_priority=high_priority,
                    once=once,
                    block_timeout=self.config.block_timeout,
                )
            except (*CONNECTION_ERRORS, redis.exceptions.NoScriptError) as exc:
                if self._killed:
                    raise ShuttingDownError() from None
                # After NOSCRIPT the task is not queued, so the next send is a
                # first one; after a connection error it is a resend.
                failed = (
                    None if isinstance(exc, redis.exceptions.NoScriptError) else exc
                )
                self._send_until_acknowledged(
                    lambda: self._scripts.enqueue(
                        [(message.task_id, encoded)],
                        high_priority=high_priority,
                        once=once,
                    ),
                    f"task {message.task_id} ({name!r})",
                    first_sent=first_sent,
                    task_id=message.task_id,
                    error=failed,
                )
                data = None
            if data is not None:
                return unwrap(TaskResult.decode(data))
            return self._wait(message.task_id, None)

    def queue_task(self, task: TaskRef, *args: Any, **kwargs: Any) -> Any:
        """Queue a task at normal priority and block until its result.

        Raises:
            TaskError: The task failed; its subclass names the cause.
            ShuttingDownError: kill() was called while waiting.
            RedisUnavailableError: Redis did not acknowledge the task within
                the resend window (up to 30 s, see sender.stop_resending_at).
                Its task_id names the task, which an attempt whose reply was
                lost may have queued all the same.
        """
        return self._queue_and_wait(task, args, kwargs)

    def queue_task_with_priority(self, task: TaskRef, *args: Any, **kwargs: Any) -> Any:
        """Queue a task at high priority and block until its result."""
        return self._queue_and_wait(task, args, kwargs, high_priority=True)

    def queue_task_once(self, task: TaskRef, *args: Any, **kwargs: Any) -> Any:
        """Queue an at-most-once task at normal priority and block until its result."""
        return self._queue_and_wait(task, args, kwargs, once=True)

    def queue_task_with_priority_once(
        self, task: TaskRef, *args: Any, **kwargs: Any
    ) -> Any:
        """Queue an at-most-once task at high priority and block until its result."""
        return self._queue_and_wait(task, args, kwargs, high_priority=True, once=True)

    def queue_task_async(self, task: TaskRef, *args: Any, **kwargs: Any) -> TaskFuture:
        """Queue a task at normal priority and return a future for its result."""
        return self.submit(task, args, kwargs)

    def queue_task_with_priority_async(
        self, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue a task at high priority and return a future for its result."""
        return self.submit(task, args, kwargs, high_priority=True)

    def queue_task_once_async(
        self, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue an at-most-once task and return a future for its result."""
        return self.submit(task, args, kwargs, once=True)

    def queue_task_with_priority_once_async(
        self, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue an at-most-once high-priority task and return a future."""
        return self.submit(task, args, kwargs, high_priority=True, once=True)

    def queue_task_with_callback(
        self, callback: ResultCallback, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue a task; call callback(result, error) when it finishes.

        The callback runs on the result-listener thread, so it should return
        quickly. error is None on success; otherwise result is None.
        """
        return _with_callback(self.submit(task, args, kwargs), callback)

    def queue_task_with_priority_with_callback(
        self, callback: ResultCallback, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue a high-priority task; call callback(result, error) when it finishes."""
        future = self.submit(task, args, kwargs, high_priority=True)
        return _with_callback(future, callback)

    def queue_task_once_with_callback(
        self, callback: ResultCallback, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue an at-most-once task; call callback(result, error) when it finishes."""
        return _with_callback(self.submit(task, args, kwargs, once=True), callback)

    def queue_task_with_priority_once_with_callback(
        self, callback: ResultCallback, task: TaskRef, *args: Any, **kwargs: Any
    ) -> TaskFuture:
        """Queue an at-most-once high-priority task with a completion callback."""
        future = self.submit(task, args, kwargs, high_priority=True, once=True)
        return _with_callback(future, callback)

    # Results

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for the result of a task queued by any process.

        Args:
            task_id: The id from TaskFuture.task_id.
            timeout: Seconds to wait; None waits until the result arrives.

        Raises:
            TimeoutError: No result within timeout.
            TaskError: The task failed; its subclass names the cause.
            ShuttingDownError: kill() was called while waiting.
        """
        future = self._listener.get(task_id)
        if future is not None:
            return future.result(timeout)
        return self._wait(task_id, timeout)

    def _wait(self, task_id: str, timeout: float | None) -> Any:
        with self._waiting():
            outcome = wait_for_result(
                self._client,
                self.keys,
                task_id,
                timeout=timeout,
                block_timeout=self.config.block_timeout,
                should_stop=lambda: self._killed,
            )
        return unwrap(outcome)

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        # Counts the callers blocked on a result key, whom kill() wakes.
        with self._waiters_lock:
            self._waiters += 1
        try:
            yield
        finally:
            with self._waiters_lock:
                self._waiters -= 1

    # Local execution

    def run_task(self, task: Task[R] | str, *args: Any, **kwargs: Any) -> R:
        """Run a task now in this process on a resource from the local pool.

        The queues are not touched. An unhealthy failure (check_health
        returns False) destroys the resource and runs the task again on a
        new one, up to max_retries times.

        Raises:
            TaskNotRegistered: A name was given that this process has not
                registered.
            MaxRetriesExceeded: Every attempt failed with an unhealthy resource.
            Exception: Whatever the task raised, unchanged, if the resource
                was healthy.
        """
        self._check_running()
        name, local = resolve(task)
        found: Task[Any] = local if local is not None else lookup(name)
        found.check_arguments(args, kwargs)
        pool = self._local_pool()
        attempt = 0
        while True:
            attempt += 1
            context = TaskContext(
                task_id=uuid.uuid4().hex, attempt=attempt, queue=self.config.queue
            )
            with pool.lease() as lease, self._track(context):
                started = time.perf_counter()
                try:
                    value: R = found.function(context, lease.resource, *args, **kwargs)
                except Exception as exc:
                    healthy = resource_is_healthy(self.config.check_health, exc)
                    final = healthy or attempt > self.config.max_retries
                    outcome = metrics.FAILED if final else metrics.RETRIED
                    self._record_local(name, context, outcome, started)
                    if healthy:
                        raise
                    lease.healthy = False
                    if final:
                        raise MaxRetriesExceeded(
                            f"task {name!r} failed {attempt} times with an unhealthy "
                            f"resource: {type(exc).__name__}: {exc}",
                            task_id=context.task_id,
                            type_name=type(exc).__name__,
                            remote_message=str(exc),
                        ) from exc
                    logger.warning(
                        "task %s failed on an unhealthy resource (%s: %s); "
                        "retrying on a new one (attempt %d of %d)",
                        name,
                        type(exc).__name__,
                        exc,
                        attempt + 1,
                        self.config.max_retries + 1,
                    )
                else:
                    self._record_local(name, context, metrics.COMPLETED, started)
                    return value

    def _record_local(
        self, name: str, context: TaskContext, outcome: str, started: float
    ) -> None:
        event = metrics.TaskEvent(
            self.config.queue,
            name,
            context.task_id,
            outcome,
            time.perf_counter() - started,
            0.0,
            local=True,
        )
        self._metrics.record(event)
        metrics.notify(self.config.metrics_collector, event)
        now = time.monotonic()
        if now - self._metrics_flushed >= LOCAL_METRICS_FLUSH_INTERVAL:
            self._metrics_flushed = now
            self._flush_local_metrics()

    def _flush_local_metrics(self) -> None:
        try:
            self._metrics.flush(self._scripts)
        except CONNECTION_ERRORS as exc:
            logger.debug("kept run_task metrics for later: %s", exc)
        except redis.RedisError:
            logger.exception("could not record run_task metrics")

    @contextlib.contextmanager
    def _track(self, context: TaskContext) -> Iterator[None]:
        self._running_contexts[context.task_id] = context
        try:
            yield
        finally:
            self._running_contexts.pop(context.task_id, None)

    def _local_pool(self) -> ResourcePool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ResourcePool(
                    self.config.on_create, self.config.on_destroy, self.config.pool_size
                )
            return self._pool

    # State

    def stats(self) -> TaskStats:
        """Read the queue's live state from Redis."""
        counts = self._scripts.counts(int(self.config.lease_timeout * 1000))
        pool = self._pool
        return TaskStats(
            queued_tasks=counts.normal,
            priority_tasks=counts.high,
            in_flight_tasks=counts.in_flight,
            active_workers=counts.workers_alive,
            available_resources=pool.available if pool is not None else 0,
            dead_letter_tasks=counts.dead_letters,
            completed_tasks=counts.counters.get(scripts.COMPLETED, 0),
            failed_tasks=counts.counters.get(scripts.FAILED, 0)
            + counts.counters.get(scripts.LOST, 0)
            + counts.counters.get(scripts.DEAD_LETTERED, 0),
            retried_tasks=counts.counters.get("retried", 0),
        )

    def metrics(self) -> TaskMetrics:
        """Read the queue's metrics, aggregated from every process, from Redis.

        Execution and wait times and the rates cover the last 60 seconds;
        totals cover the queue's life. run_task calls of this process are
        included; those of other processes appear within about a second.
        """
        self._flush_local_metrics()
        counts = self._scripts.counts(int(self.config.lease_timeout * 1000))
        return metrics.read_metrics(self._client, self.keys, counts.counters)

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: send buffered tasks, wait for results, free resources.

        New tasks are rejected with ShuttingDownError. Tasks still queued in
        Redis stay there for the workers.

        Args:
            timeout: Seconds to wait in all; None waits for every result.
        """
        self._stopping = True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sender.flush(timeout)
        self._sender.close(drop=False)
        for future in self._listener.pending():
            remaining = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            try:
                future.exception(remaining)
            except Exception:
                break
        self._close(wait=True)

    def kill(self) -> None:
        """Stop at once: every caller waiting in this process gets ShuttingDownError.

        Tasks already in Redis stay queued and workers still run them. Tasks
        submitted without waiting that were not sent yet are dropped, and
        their futures fail with ShuttingDownError too. run_task calls under
        way see TaskContext.cancelled become True.
        """
        self._stopping = True
        self._killed = True
        self._killed_event.set()
        self._sender.close(drop=True)
        self._listener.fail_all(ShuttingDownError())
        for context in list(self._running_contexts.values()):
            context.cancel()
        if self._waiters:
            # Closing the sockets wakes threads blocked on a result key; they
            # see _killed and raise ShuttingDownError.
            # NOTE: on a server that accepts connections but does not reply
            # (stopped, not dead), redis-py's resends reconnect and wait out
            # socket_timeout up to three more times before the caller sees
            # _killed, because DirectConnections resends without checking it.
            self._client.connection_pool.disconnect()
        self._close(wait=False)

    def _close(self, wait: bool) -> None:
        _open_managers.discard(self)
        if wait:
            self._flush_local_metrics()
        self._listener.stop(wait=wait)
        if self._pool is not None:
            self._pool.close()
        self._scripts.close()
        if wait and self._owns_client:
            self._client.close()

    def _check_running(self) -> None:
        if self._stopping:
            raise ShuttingDownError()


# Managers not stopped yet. At interpreter exit each sends its buffered
# tasks, so a script that queues without waiting and then ends loses none.
_open_managers: weakref.WeakSet[TaskManager] = weakref.WeakSet()

# Seconds each open manager may spend sending buffered tasks at exit.
EXIT_FLUSH_TIMEOUT = 10.0


@atexit.register
def _flush_open_managers() -> None:
    for manager in list(_open_managers):
        if not manager._stopping and not manager.flush(EXIT_FLUSH_TIMEOUT):
            logger.error(
                "exiting with tasks of queue %s not yet sent to Redis at %s",
                manager.config.queue,
                manager.config.masked_redis_url,
            )


def _new_task_ids(count: int) -> list[str]:
    # 128 random bits per id, as in TaskManager._message, read from the OS in
    # one call for all the ids.
    digits = os.urandom(16 * count).hex()
    return [digits[start : start + 32] for start in range(0, len(digits), 32)]


def _check_argument_counts(
    task: Task[Any], argument_tuples: list[tuple[Any, ...]]
) -> None:
    # With no keyword arguments, whether a call binds depends only on the
    # number of positional arguments, so each count is checked once.
    checked: set[int] = set()
    for args in argument_tuples:
        if len(args) not in checked:
            task.check_arguments(args, {})
            checked.add(len(args))


def _with_callback(future: TaskFuture, callback: ResultCallback) -> TaskFuture:
    def call(done: Any) -> None:
        if done.cancelled():
            error: BaseException | None = concurrent.futures.CancelledError()
        else:
            error = done.exception()
        try:
            callback(None if error is not None else done.result(), error)
        except Exception:
            logger.exception("result callback for task %s raised", future.task_id)

    future.add_done_callback(call)
    return future
