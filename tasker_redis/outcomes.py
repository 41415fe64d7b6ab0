"""Outcomes of task runs: encoded results, dead-letter entries and their log lines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tasker_redis import registry, scripts
from tasker_redis import serialization as ser
from tasker_redis.errors import SerializationError
from tasker_redis.scripts import ClaimedTask

logger = logging.getLogger(__name__)

# Characters of arguments and results shown in DEBUG logs.
DEBUG_PREVIEW = 200


@dataclass(frozen=True)
class Outcome:
    """The outcome of running a task, ready to record.

    Attributes:
        result: The encoded TaskResult, or None to queue the task again.
        counter: The counter to increment with the result.
        status: One word for the log line.
        reply_to: Inbox of the waiting producer, if known.
        dead_letter: An encoded DeadLetter entry to push, if any.
    """

    result: bytes | None
    counter: str
    status: str
    reply_to: str | None = None
    dead_letter: bytes | None = None


def preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= DEBUG_PREVIEW else text[:DEBUG_PREVIEW] + "..."


class Outcomes:
    """Builds the Outcome of each way a task run can end, for one worker."""

    def __init__(self, worker_id: str, max_payload_size: int) -> None:
        self.worker_id = worker_id
        self.max_payload_size = max_payload_size

    def timed_out(
        self, task: ClaimedTask, message: ser.TaskMessage, exc: Exception
    ) -> Outcome:
        timeout = message.timeout or registry.lookup(message.name).timeout
        text = (
            f"task {task.task_id} ({message.name}) timed out after {timeout} s "
            f"and stopped with {type(exc).__name__}: {exc}"
        )
        logger.warning("%s", text)
        result = self.error(task, ser.TIMEOUT, "TaskTimeout", text)
        return Outcome(result, scripts.FAILED, "timed out", message.reply_to)

    def success(
        self, task: ClaimedTask, message: ser.TaskMessage, value: Any
    ) -> Outcome:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s result: %s", task.task_id, preview(value))
        result = ser.TaskResult(
            task.task_id, ok=True, value=value, worker_id=self.worker_id
        )
        try:
            encoded = result.encode(self.max_payload_size)
        except SerializationError as exc:
            logger.warning("task %s %s: %s", task.task_id, message.name, exc)
            failure = self.error(
                task,
                ser.SERIALIZATION,
                "SerializationError",
                str(exc),
            )
            return Outcome(failure, scripts.FAILED, "failed", message.reply_to)
        return Outcome(encoded, scripts.COMPLETED, "completed", message.reply_to)

    def dead_letter(
        self,
        task: ClaimedTask,
        reason: str,
        *,
        reply_to: str | None,
        kind: str = ser.DEAD_LETTERED,
        task_name: str = "",
    ) -> Outcome:
        logger.error("task %s moved to the dead-letter list: %s", task.task_id, reason)
        entry = ser.DeadLetter(task.task_id, reason, task.message, self.worker_id)
        result = self.error(task, kind, kind, reason, task_name=task_name)
        return Outcome(
            result, scripts.DEAD_LETTERED, "dead-lettered", reply_to, entry.encode()
        )

    def error(
        self,
        task: ClaimedTask,
        kind: str,
        error_type: str,
        text: str,
        details: str = "",
        *,
        task_name: str = "",
    ) -> bytes:
        result = ser.TaskResult(
            task.task_id,
            ok=False,
            error_kind=kind,
            error_type=error_type,
            error_message=text[:10_000],
            traceback=details[-20_000:],
            worker_id=self.worker_id,
            task_name=task_name,
        )
        return result.encode(self.max_payload_size)
