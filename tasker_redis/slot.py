"""RunningTaskSlot: shared memory between a worker process and its supervisor."""

from __future__ import annotations

from typing import Any


class RunningTaskSlot:
    """Shared memory where a worker process publishes the task it runs.

    The supervisor reads it to kill a worker whose task runs past its
    timeout without returning (a tight loop, a blocking C call), and, after
    a worker dies, to tell the task that was running from the others it
    held. Deadlines are time.monotonic() values, which on Linux all
    processes share.
    """

    def __init__(self, context: Any) -> None:
        self._task_id = context.Array("c", 64, lock=False)
        self._deadline = context.Value("d", 0.0, lock=False)
        self._token = context.Value("q", 0, lock=False)
        self._running = context.Value("b", 0, lock=False)

    def start(self, task_id: str, claim: str, deadline: float | None) -> None:
        """Record the task being started, its claim and its deadline."""
        self._task_id.value = task_id.encode(errors="surrogateescape")[:64]
        self._token.value = int(claim.partition(":")[0])
        self._running.value = 1
        self._deadline.value = deadline or 0.0

    def stop(self) -> None:
        """Record that the task returned; its token stays until reset()."""
        self._deadline.value = 0.0
        self._running.value = 0

    def reset(self) -> None:
        """Record that the results of every started task are in Redis."""
        self._token.value = 0

    def started(self) -> tuple[int, bool]:
        """Return the token of the last started task (0 if none) and whether it runs."""
        return self._token.value, bool(self._running.value)

    def running_task(self) -> str | None:
        """Return the id of the task being run, or None."""
        if not self._running.value:
            return None
        task_id: str = self._task_id.value.decode(errors="surrogateescape")
        return task_id

    def read(self) -> tuple[str, float] | None:
        """Return (task id, deadline) of the running task, or None.

        The deadline is read before and after the id: if they differ, the
        worker moved to another task in between, and None is returned.
        """
        deadline = self._deadline.value
        task_id = self._task_id.value.decode(errors="surrogateescape")
        if deadline == 0.0 or self._deadline.value != deadline:
            return None
        return task_id, deadline
