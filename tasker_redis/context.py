"""TaskContext: the id, attempt and cancellation state of a running task."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tasker_redis.errors import TaskCancelled


@dataclass
class TaskContext:
    """Passed as the first argument of every task.

    Attributes:
        task_id: Id of the task, the same that producers wait on. run_task
            gives each call a fresh id.
        attempt: 1 on the first run, plus one for each retry and each
            delivery after a worker crash.
        high_priority: True if the task came from the high-priority queue.
        queue: Name of the queue.
        worker_id: Id of the worker process, or "local" inside run_task.
        deadline: time.monotonic() value after which the task should stop, or
            None if it has none.
    """

    task_id: str
    attempt: int = 1
    high_priority: bool = False
    queue: str = ""
    worker_id: str = "local"
    deadline: float | None = None
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or its deadline passed."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self._cancelled.set()
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Request that the task stop; the task reads the request from `cancelled`."""
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        """Raise TaskCancelled if the task was cancelled or its deadline passed."""
        if self.cancelled:
            raise TaskCancelled(f"task {self.task_id} was cancelled")

    def wait(self, seconds: float) -> bool:
        """Sleep up to seconds, waking early on cancellation; return `cancelled`."""
        if self.deadline is not None:
            seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
        self._cancelled.wait(seconds)
        return self.cancelled
