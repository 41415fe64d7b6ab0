"""Exceptions raised by tasker-redis, all derived from TaskerError."""

from __future__ import annotations


class TaskerError(Exception):
    """Base class of every error that tasker-redis raises."""


class ConfigError(TaskerError, ValueError):
    """Raised when a Config value is invalid."""


class RedisUnavailableError(TaskerError, ConnectionError):
    """Raised when the Redis server cannot be reached.

    Attributes:
        task_id: The id of the task that a blocking call or an async future
            was queueing, or "". Redis may have run an attempt whose reply
            was lost. Then the task is queued all the same, and
            TaskManager.result(task_id) returns its result once Redis is back.
    """

    def __init__(self, message: str, task_id: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id


class ShuttingDownError(TaskerError):
    """Raised when a task manager or worker is stopping and takes no more work."""

    def __init__(self, message: str = "task manager is shutting down") -> None:
        super().__init__(message)


class TaskCancelled(TaskerError):
    """Raised inside a task by TaskContext.raise_if_cancelled after cancellation."""


class TaskError(TaskerError):
    """Base class of errors about one task, raised locally or reported by a worker.

    Errors that a worker reports carry its details in the attributes below, and
    errors raised in this process leave them empty.

    Attributes:
        task_id: The id of the task, or "" if it has none yet.
        type_name: The qualified name of the exception type on the worker.
        remote_message: The exception message on the worker.
        traceback: The formatted traceback from the worker, or "" if none.
    """

    def __init__(
        self,
        message: str,
        *,
        task_id: str = "",
        type_name: str = "",
        remote_message: str = "",
        traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.type_name = type_name
        self.remote_message = remote_message
        self.traceback = traceback


class SerializationError(TaskError, TypeError):
    """Raised when a task argument or result cannot be encoded with msgpack."""


class TaskNotRegistered(TaskError, LookupError):
    """Raised when a task name is not in the registry of the process that needs it.

    Attributes:
        task_name: The name that was not found.
    """

    def __init__(self, message: str, *, task_name: str = "", **details: str) -> None:
        super().__init__(message, **details)
        self.task_name = task_name


class TaskFailed(TaskError):
    """Raised when a task raised an exception on the worker."""


class MaxRetriesExceeded(TaskError):
    """Raised when a task kept failing with an unhealthy resource past max_retries."""


class TaskTimeout(TaskError, TimeoutError):
    """Raised when a task ran longer than its timeout and was stopped."""


class TaskLost(TaskError):
    """Raised when an at-most-once task was interrupted and will not run again.

    A worker that dies or is killed while running a task queued with a `_once`
    method cannot tell whether the task ran, so the task is failed, not retried.
    """


class TaskDeadLettered(TaskError):
    """Raised when a worker moved a task to the dead-letter list.

    This happens to messages that cannot be decoded and to tasks that crashed
    their worker process more than Config.max_crashes times.
    """


class DeadLetterNotFound(TaskerError, LookupError):
    """Raised when no dead-letter entry has the requested task id."""


class CannotRetry(TaskerError):
    """Raised when a dead-letter entry cannot be queued again, with the reason."""
