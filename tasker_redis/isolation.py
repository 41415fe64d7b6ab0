"""TaskGate: tasks of one worker process run side by side, a suspect task alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TaskGate:
    """Lets the threads of a worker process run tasks together, or one alone.

    When a worker process of several threads dies, each task it was running
    is charged a crash, since the dead process cannot report which one
    caused it. Each such task then runs alone when it runs again: no other
    thread of the process starts a task until it returns. So a task that
    kills its process keeps being charged and is dead-lettered after
    max_crashes, while a task that only ran beside it completes.

    A thread waiting to run a task alone goes ahead of threads that want to
    start a task beside others, so it waits for at most the tasks running
    when it arrived.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._running = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def enter(self, *, alone: bool) -> Iterator[None]:
        """Wait until the task may start, and hold the gate while it runs."""
        with self._condition:
            if alone:
                self._waiting_alone += 1
                try:
                    self._condition.wait_for(lambda: self._running == 0)
                finally:
                    self._waiting_alone -= 1
                self._alone = True
            else:
                self._condition.wait_for(
                    lambda: not self._alone and self._waiting_alone == 0
                )
            self._running += 1
        try:
            yield
        finally:
            with self._condition:
                self._running -= 1
                if alone:
                    self._alone = False
                self._condition.notify_all()
