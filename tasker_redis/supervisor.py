"""The supervisor of `tasker worker`: starts, restarts and stops worker processes."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import redis

from tasker_redis import __version__, registry
from tasker_redis import serialization as ser
from tasker_redis.config import Config
from tasker_redis.connection import (
    CONNECTION_ERRORS,
    Backoff,
    check_server,
    create_client,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.recovery import record_failure, release_worker
from tasker_redis.scaling import BurstScaler
from tasker_redis.scripts import QueueScripts
from tasker_redis.slot import RunningTaskSlot
from tasker_redis.worker import EXIT_OK, EXIT_STARTUP_FAILED
from tasker_redis.worker_process import STOP_SIGNALS, run_worker_process

logger = logging.getLogger(__name__)

# A worker that exits sooner than this after starting is restarted with backoff.
QUICK_EXIT_SECONDS = 5.0

EXIT_FAILED = 1

# Seconds between reads of the deadlines that worker processes publish.
DEADLINE_CHECK_INTERVAL = 0.1

# Seconds after its deadline that a task has to notice TaskContext.cancelled
# and return before its worker process is killed.
KILL_GRACE = 0.5


def _process_context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds with the task modules already
    # imported. Elsewhere spawn is the only safe choice.
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


@dataclass
class WorkerThread:
    """One thread of a worker process: the id it claims tasks under and the
    slot where it publishes its running task."""

    worker_id: str
    running: RunningTaskSlot


@dataclass
class Child:
    """One worker process and its threads."""

    slot: int
    worker_id: str
    process: multiprocessing.process.BaseProcess
    threads: list[WorkerThread]
    # True for the processes that run() starts first; a restart or a burst
    # worker is not.
    initial: bool = False
    started: float = field(default_factory=time.monotonic)

    def running_tasks(self) -> list[str]:
        """Return the ids of the tasks that its threads are running."""
        return [
            task_id
            for thread in self.threads
            if (task_id := thread.running.running_task()) is not None
        ]


class Supervisor:
    """Keeps worker_count worker processes running until a signal stops them.

    With burst scaling on (Config.max_worker_count above worker_count and
    burst_interval above 0), it adds burst workers up to max_worker_count
    while the backlog grows, and retires them, each after its current task,
    when the queue is empty.

    The first SIGTERM or SIGINT makes every worker finish its task and
    exit; the supervisor then exits 0. A second one kills the workers at
    once, puts their tasks back on the queue (failing `_once` ones), and
    exits 128 + the signal number. A worker that dies on its own is
    replaced, and its tasks are released right away instead of waiting for
    the lease to expire.
    """

    def __init__(
        self,
        config: Config,
        *,
        close_in_workers: Sequence[int] = (),
        task_modules: Sequence[str] = (),
    ) -> None:
        """Prepare to supervise; nothing starts before run().

        Args:
            config: Queue and worker settings.
            close_in_workers: File descriptors that worker processes close
                right after fork, such as a metrics server's listening socket,
                so that it is released when the supervisor exits.
            task_modules: Modules that define the tasks, imported by each
                worker process started with spawn (on systems other than
                Linux).
        """
        self.config = config
        self._task_modules = tuple(task_modules)
        self._close_in_workers = tuple(close_in_workers)
        self.id = f"supervisor-{socket.gethostname()}-{os.getpid()}"
        self._context = _process_context()
        self._children: dict[int, Child] = {}
        self._restart_at: dict[int, float] = {}
        self._backoff: dict[int, Backoff] = {}
        self._signals: list[int] = []
        self._stopping = False
        self._startup_failed = False
        self._client = create_client(config, name="tasker-supervisor")
        self._scripts = QueueScripts(self._client, QueueKeys(config.queue))
        self._scaler = BurstScaler(config.worker_count, config.max_workers)
        self._next_scaling = time.monotonic() + config.burst_interval
        # Slots of burst workers sent SIGTERM to retire after their task.
        self._retiring: set[int] = set()

    def run(self) -> int:
        """Run until stopped; return the process exit code."""
        check_server(self._client, self.config)
        logger.info(
            "tasker-redis %s worker starting: queue=%s workers=%d threads=%d "
            "redis=%s tasks=%s",
            __version__,
            self.config.queue,
            self.config.worker_count,
            self.config.worker_threads,
            self.config.masked_redis_url,
            ", ".join(registry.registered_names()) or "none",
        )
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = self._install_signal_handlers(writer)
        try:
            for slot in range(self.config.worker_count):
                self._start(slot, initial=True)
            code = self._supervise(reader)
        finally:
            signal.set_wakeup_fd(-1)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            reader.close()
            writer.close()
        logger.info("tasker worker stopped (exit code %d)", code)
        return code

    def _install_signal_handlers(
        self, writer: socket.socket
    ) -> dict[int, signal._HANDLER]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self._signals.append(signum)

        previous: dict[int, signal._HANDLER] = {}
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, on_signal)
        # Signals write to the socket, which wakes the wait in _supervise.
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        return previous

    def _start(self, slot: int, *, initial: bool = False) -> None:
        worker_id = (
            f"{socket.gethostname()}-{os.getpid()}-{slot}-{uuid.uuid4().hex[:8]}"
        )
        count = self.config.worker_threads
        threads = [
            WorkerThread(
                worker_id if count == 1 else f"{worker_id}.{index}",
                RunningTaskSlot(self._context),
            )
            for index in range(count)
        ]
        process = self._context.Process(  # type: ignore[attr-defined]
            target=run_worker_process,
            args=(
                self.config,
                [thread.worker_id for thread in threads],
                [thread.running for thread in threads],
                self._close_in_workers,
                self._task_modules,
            ),
            name=f"tasker-worker-{slot}",
            daemon=False,
        )
        # A stop signal that reaches the child before it installs its own
        # handlers would run the supervisor's copy and be lost. So the signals
        # stay blocked across fork, and the child unblocks them when ready.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self._children[slot] = Child(slot, worker_id, process, threads, initial)
        if count == 1:
            logger.info("started worker %s (pid %s)", worker_id, process.pid)
        else:
            logger.info(
                "started worker %s (pid %s) with %d threads",
                worker_id,
                process.pid,
                count,
            )

    def _supervise(self, wakeup: socket.socket) -> int:
        while self._children or (self._restart_at and not self._stopping):
            # Deadlines of running tasks change without notice, so the wait is
            # cut to DEADLINE_CHECK_INTERVAL to read them.
            timeout = DEADLINE_CHECK_INTERVAL
            if self._restart_at and not self._stopping:
                next_restart = min(self._restart_at.values()) - time.monotonic()
                timeout = max(0.0, min(timeout, next_restart))
            sentinels = [child.process.sentinel for child in self._children.values()]
            multiprocessing.connection.wait([*sentinels, wakeup], timeout)
            _drain(wakeup)

            while self._signals:
                code = self._on_signal(self._signals.pop(0))
                if code is not None:
                    return code
            self._stop_overdue()
            self._reap()
            self._restart_due()
            self._scale()
        return EXIT_FAILED if self._startup_failed else EXIT_OK

    def _on_signal(self, signum: int) -> int | None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._stopping = True
            logger.info(
                "received %s: stopping after running tasks finish (send it again to "
                "stop at once)",
                name,
            )
            self._terminate_all()
            return None
        logger.warning("received %s again: killing workers now", name)
        self._kill_all()
        return 128 + signum

    def _terminate_all(self) -> None:
        for child in self._children.values():
            if child.process.is_alive() and child.process.pid is not None:
                os.kill(child.process.pid, signal.SIGTERM)

    def _kill_all(self) -> None:
        children = list(self._children.values())
        for child in children:
            if child.process.is_alive() and child.process.pid is not None:
                os.kill(child.process.pid, signal.SIGKILL)
        for child in children:
            child.process.join()
            self._release(child, crashed=False)
        self._children.clear()

    def _stop_overdue(self) -> None:
        now = time.monotonic()
        for slot, child in list(self._children.items()):
            overdue = [
                (thread, running)
                for thread in child.threads
                if (running := thread.running.read()) is not None
                and now >= running[1] + KILL_GRACE
            ]
            if not overdue:
                continue
            # The task ignored its cancelled context: end the process, fail the
            # task with TaskTimeout and start a fresh worker with a new resource.
            # NOTE: a thread cannot be stopped from outside, so the kill also
            # interrupts the tasks of the process's other threads. They go back
            # on the queue with no crash charged, and `_once` ones fail.
            if child.process.pid is not None and child.process.is_alive():
                os.kill(child.process.pid, signal.SIGKILL)
            child.process.join()
            del self._children[slot]
            for thread, (overdue_id, _) in overdue:
                self._fail_timed_out(child, thread, overdue_id)
            timed_out = {running[0] for _, running in overdue}
            interrupted = [
                task_id for task_id in child.running_tasks() if task_id not in timed_out
            ]
            if interrupted:
                logger.warning(
                    "tasks %s, interrupted in the other threads of killed worker "
                    "process %s, go back on the queue",
                    ", ".join(interrupted),
                    child.process.pid,
                )
            self._release(child, crashed=False)
            if not self._stopping:
                self._restart_at[slot] = time.monotonic()

    def _fail_timed_out(self, child: Child, thread: WorkerThread, task_id: str) -> None:
        try:
            orphan = self._scripts.takeover(
                task_id,
                thread.worker_id,
                releaser_id=self.id,
                lease_ms=int(self.config.lease_timeout * 1000),
            )
            if orphan is None:
                return
            text = (
                f"task {task_id} ran past its timeout and did not stop, so its worker "
                f"process {child.process.pid} was killed"
            )
            logger.warning(
                "%s%s", text, "" if self._stopping else "; starting a new worker"
            )
            record_failure(
                self._scripts, self.config, orphan, self.id, kind=ser.TIMEOUT, text=text
            )
        except CONNECTION_ERRORS as exc:
            logger.error(
                "could not record the timeout of task %s: %s; it runs again when its "
                "lease expires",
                task_id,
                exc,
            )

    def _reap(self) -> None:
        for slot, child in list(self._children.items()):
            if child.process.is_alive():
                continue
            child.process.join()
            del self._children[slot]
            code = child.process.exitcode
            # A worker that exits while a task runs crashed, whatever its exit
            # code: the task may have called sys.exit() or os._exit().
            running_tasks = child.running_tasks()
            running = bool(running_tasks)
            crashed = code != EXIT_OK or running
            if len(running_tasks) > 1:
                logger.warning(
                    "worker process %s died (code %s) while running tasks %s in "
                    "its threads; each is charged a crash and runs alone next",
                    child.process.pid,
                    code,
                    ", ".join(running_tasks),
                )
            elif running_tasks:
                logger.warning(
                    "worker process %s died (code %s) while running task %s, "
                    "which is charged a crash",
                    child.process.pid,
                    code,
                    running_tasks[0],
                )
            self._release(child, crashed=crashed)
            if slot in self._retiring and not crashed:
                self._retiring.discard(slot)
                logger.info("burst worker %s retired", child.worker_id)
                continue
            self._retiring.discard(slot)
            if self._stopping:
                logger.info("worker %s exited (code %s)", child.worker_id, code)
                continue
            if code == EXIT_STARTUP_FAILED and not running:
                # At the first start this is most likely a configuration
                # error. Later, as in a restart during a database outage, the
                # other workers go on and this one starts again with backoff.
                if child.initial:
                    logger.error(
                        "worker %s could not create its resource; stopping all workers",
                        child.worker_id,
                    )
                    self._startup_failed = True
                    self._stopping = True
                    self._terminate_all()
                else:
                    self._schedule_restart(child, code, "could not create its resource")
                continue
            self._schedule_restart(child, code, "exited unexpectedly")

    def _schedule_restart(self, child: Child, code: int | None, reason: str) -> None:
        backoff = self._backoff.setdefault(child.slot, Backoff(base=0.1, cap=2.0))
        if time.monotonic() - child.started >= QUICK_EXIT_SECONDS:
            backoff.reset()
            delay = 0.0
        else:
            delay = backoff.next_delay()
        logger.error(
            "worker %s %s (code %s); starting a new one in %.2f s",
            child.worker_id,
            reason,
            code,
            delay,
        )
        self._restart_at[child.slot] = time.monotonic() + delay

    def _scale(self) -> None:
        if not self.config.burst_enabled or self._stopping:
            return
        now = time.monotonic()
        if now < self._next_scaling:
            return
        self._next_scaling = now + self.config.burst_interval
        try:
            counts = self._scripts.counts(int(self.config.lease_timeout * 1000))
        except redis.RedisError as exc:
            logger.warning("skipped a burst scaling check: %s", exc)
            return

        active = len(self._children) + len(self._restart_at) - len(self._retiring)
        decision = self._scaler.decide(now, counts, active)
        if decision.change > 0:
            slot = min(set(range(self.config.max_workers)) - self._slots_in_use())
            self._start(slot)
        elif decision.change < 0:
            slot = max(set(self._children) - self._retiring)
            if slot < self.config.worker_count:
                return
            self._retiring.add(slot)
            pid = self._children[slot].process.pid
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
        else:
            return
        logger.info(
            "%s: %d worker processes; backlog %d, arrivals %.1f/s, completions %.1f/s",
            "added a burst worker"
            if decision.change > 0
            else "retiring a burst worker",
            active + decision.change,
            decision.backlog,
            decision.arrival_rate,
            decision.completion_rate,
        )

    def _slots_in_use(self) -> set[int]:
        return set(self._children) | set(self._restart_at)

    def _restart_due(self) -> None:
        if self._stopping:
            self._restart_at.clear()
            return
        now = time.monotonic()
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._start(slot)

    def _release(self, child: Child, *, crashed: bool) -> None:
        # NOTE: when a process of several threads dies, the task running in
        # each thread is charged the crash, because the dead process cannot
        # report which one caused it. A poison task is still dead-lettered
        # after max_crashes, and another task is charged in error only when
        # it runs beside such a crash.
        for thread in child.threads:
            self._release_thread(thread, crashed=crashed)

    def _release_thread(self, thread: WorkerThread, *, crashed: bool) -> None:
        started_token, running = thread.running.started()
        try:
            failed = release_worker(
                self._scripts,
                self.config,
                thread.worker_id,
                releaser_id=self.id,
                crashed=crashed,
                started_token=started_token,
                running=running,
            )
        except Exception as exc:
            # Any failure here must not end the supervisor: lease expiry
            # releases the tasks later in any case.
            logger.error(
                "could not release the tasks of worker %s: %s; they return to the "
                "queue when their lease expires",
                thread.worker_id,
                exc,
            )
            return
        if failed:
            logger.warning(
                "failed %d tasks of worker %s that must not run again",
                failed,
                thread.worker_id,
            )


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
