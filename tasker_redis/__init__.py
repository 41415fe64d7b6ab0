"""tasker-redis: a durable task queue on Redis with per-worker resources."""

from tasker_redis.config import Config
from tasker_redis.context import TaskContext
from tasker_redis.errors import (
    CannotRetry,
    ConfigError,
    DeadLetterNotFound,
    MaxRetriesExceeded,
    RedisUnavailableError,
    SerializationError,
    ShuttingDownError,
    TaskCancelled,
    TaskDeadLettered,
    TaskerError,
    TaskError,
    TaskFailed,
    TaskLost,
    TaskNotRegistered,
    TaskTimeout,
)
from tasker_redis.manager import TaskManager
from tasker_redis.metrics import MetricsCollector, TaskEvent, TaskMetrics
from tasker_redis.registry import Task, task
from tasker_redis.results import TaskFuture
from tasker_redis.stats import TaskStats

__version__ = "0.1.0"

__all__ = [
    "CannotRetry",
    "Config",
    "ConfigError",
    "DeadLetterNotFound",
    "MaxRetriesExceeded",
    "MetricsCollector",
    "RedisUnavailableError",
    "SerializationError",
    "ShuttingDownError",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskDeadLettered",
    "TaskError",
    "TaskEvent",
    "TaskFailed",
    "TaskFuture",
    "TaskLost",
    "TaskManager",
    "TaskMetrics",
    "TaskNotRegistered",
    "TaskStats",
    "TaskTimeout",
    "TaskerError",
    "__version__",
    "task",
]
