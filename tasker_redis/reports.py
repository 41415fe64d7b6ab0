"""The INFO line and metrics of each task a worker ran, emitted off its claim loop."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass

from tasker_redis import metrics, scripts
from tasker_redis.outcomes import Outcome

# The worker's logger, so that logging settings for workers apply to these lines.
logger = logging.getLogger("tasker_redis.worker")

# Maximum batches of reports waiting for the reporter thread. Past it the
# worker writes them itself, so a stalled log handler slows the worker down
# instead of filling memory.
MAX_WAITING_BATCHES = 1_000


@dataclass(frozen=True)
class TaskReport:
    """The log line and metrics of one task run.

    Attributes:
        task_id: Id of the task.
        name: Registered name of the task.
        outcome: How the run ended.
        duration: Seconds the task function ran.
        wait: Seconds the task waited in the queue.
        attempt: TaskContext.attempt of the run.
    """

    task_id: str
    name: str
    outcome: Outcome
    duration: float
    wait: float
    attempt: int


class Reporter:
    """A thread of its own that writes each task's INFO line and records its metrics.

    A worker hands over its reports after their results are in Redis. A log
    handler can be slow or stall, and the claim loop must not wait for it,
    because the heartbeat extends only the leases of tasks the loop has read.
    """

    def __init__(
        self,
        queue_name: str,
        recorder: metrics.MetricsRecorder,
        collector: metrics.MetricsCollector | None,
    ) -> None:
        self._queue_name = queue_name
        self._recorder = recorder
        self._collector = collector
        self._waiting: queue.SimpleQueue[list[TaskReport] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def add(self, reports: list[TaskReport]) -> None:
        """Emit reports from the reporter thread, or here if it is behind.

        Called from one thread only, the worker's, which names the reporter
        thread after itself on the first call.
        """
        if not reports:
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run,
                name=f"{threading.current_thread().name}-reports",
                daemon=True,
            )
            self._thread.start()
        if self._waiting.qsize() >= MAX_WAITING_BATCHES:
            self._emit(reports)
        else:
            self._waiting.put(reports)

    def close(self, timeout: float) -> None:
        """Emit the reports handed over so far, waiting up to timeout seconds."""
        if self._thread is None:
            return
        self._waiting.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "timed out after %.1f s waiting for the log handler; the lines "
                "of the last finished tasks are not written",
                timeout,
            )

    def _run(self) -> None:
        while True:
            reports = self._waiting.get()
            if reports is None:
                return
            try:
                self._emit(reports)
            except Exception:
                # A failing handler must not end the thread, which would
                # leave later reports unwritten. The error goes to the same
                # handlers, so it may fail too.
                with contextlib.suppress(Exception):
                    logger.exception("could not write the log lines of finished tasks")

    def _emit(self, reports: list[TaskReport]) -> None:
        # Metrics first, so that a failing log handler loses only lines.
        for report in reports:
            outcome = report.outcome
            if outcome.result is None:
                kind = metrics.RETRIED
            elif outcome.counter == scripts.COMPLETED:
                kind = metrics.COMPLETED
            else:
                kind = metrics.FAILED
            event = metrics.TaskEvent(
                self._queue_name,
                report.name,
                report.task_id,
                kind,
                report.duration,
                report.wait,
            )
            self._recorder.record(event)
            metrics.notify(self._collector, event)
        for report in reports:
            logger.info(
                "task %s %s %s in %.3f s (waited %.3f s, attempt %d)",
                report.task_id,
                report.name,
                report.outcome.status,
                report.duration,
                report.wait,
                report.attempt,
            )
