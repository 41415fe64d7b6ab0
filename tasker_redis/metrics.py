"""Task metrics: local recording, aggregation in Redis, and the TaskMetrics view.

Every worker process, and every TaskManager that calls run_task, counts its
own tasks in memory and adds the counts to Redis about once a second. Redis
keeps one hash per 5-second slot of server time, expiring after the window, with
execution and wait times in fixed logarithmic buckets. Memory is therefore
bounded by the number of buckets and slots, whatever the number of tasks, and
any process can read the metrics of the whole queue.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import redis

from tasker_redis.connection import CONNECTION_ERRORS
from tasker_redis.keys import (
    METRICS_SLOT_MS,
    METRICS_TTL_MS,
    METRICS_WINDOW_MS,
    QueueKeys,
)
from tasker_redis.scripts import QueueScripts

logger = logging.getLogger(__name__)

SLOT_SECONDS = METRICS_SLOT_MS // 1000
WINDOW_SECONDS = METRICS_WINDOW_MS // 1000

# Bucket i counts durations in [MIN * GROWTH**i, MIN * GROWTH**(i + 1)). With
# these values a percentile is within 10% of the true value, from 1 µs up to
# about 2.4 hours (240 buckets). Longer runs all fall in the last bucket.
BUCKET_MIN = 1e-6
BUCKET_GROWTH = 1.1
BUCKET_COUNT = 240

# Maximum wait counted, in seconds (30 days).
MAX_WAIT_SECONDS = 30 * 86400.0

# Outcomes of a task run, as counted in the metrics.
COMPLETED = "completed"
FAILED = "failed"
RETRIED = "retried"


def bucket_of(seconds: float) -> int:
    """Return the bucket index of a duration."""
    if seconds <= BUCKET_MIN:
        return 0
    index = int(math.log(seconds / BUCKET_MIN) / math.log(BUCKET_GROWTH))
    return min(index, BUCKET_COUNT - 1)


def bucket_value(index: int) -> float:
    """Return the representative duration of a bucket: its geometric middle."""
    return float(BUCKET_MIN * BUCKET_GROWTH ** (index + 0.5))


@dataclass(frozen=True)
class TaskEvent:
    """One finished task run, as passed to a MetricsCollector.

    Attributes:
        queue: Name of the queue.
        task_name: Registered name of the task.
        task_id: Id of the task.
        outcome: "completed", "failed" or "retried".
        execution_time: Seconds the task function ran.
        wait_time: Seconds from queueing to start, by the producer's and the
            worker's clocks; 0 for run_task.
        local: True for a run_task call, False for a run on a worker.
    """

    queue: str
    task_name: str
    task_id: str
    outcome: str
    execution_time: float
    wait_time: float
    local: bool = False


class MetricsCollector(Protocol):
    """Receives every TaskEvent, to send metrics to another system.

    Set one as Config.metrics_collector. The worker process, or the caller
    of run_task, calls it right after each run, so it must return quickly.
    An exception it raises is logged and ignored.
    """

    def record(self, event: TaskEvent) -> None:
        """Handle one finished task run."""


def notify(collector: MetricsCollector | None, event: TaskEvent) -> None:
    """Pass event to collector, logging instead of raising what it raises."""
    if collector is None:
        return
    try:
        collector.record(event)
    except Exception:
        logger.exception("metrics collector %r raised", collector)


class MetricsRecorder:
    """Counts task runs in memory until flush() adds them to Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fields: Counter[str] = Counter()
        self._min: float | None = None
        self._max: float | None = None

    def record(self, event: TaskEvent) -> None:
        """Count one finished run."""
        with self._lock:
            fields = self._fields
            fields[event.outcome] += 1
            if event.local:
                # Workers count queued tasks in the lifetime counters as they
                # record results; run_task calls are counted here instead.
                fields[f"run_task_{event.outcome}"] += 1
            if event.outcome == RETRIED:
                return
            fields[f"e:{bucket_of(event.execution_time)}"] += 1
            fields["e_sum_us"] += round(event.execution_time * 1e6)
            if not event.local:
                # A producer clock far off could give any wait; a cap keeps
                # the sum within a Redis integer.
                wait = min(max(event.wait_time, 0.0), MAX_WAIT_SECONDS)
                fields[f"w:{bucket_of(wait)}"] += 1
                fields["w_sum_us"] += round(wait * 1e6)
                fields["waited"] += 1
            if self._min is None or event.execution_time < self._min:
                self._min = event.execution_time
            if self._max is None or event.execution_time > self._max:
                self._max = event.execution_time

    def flush(self, queue_scripts: QueueScripts) -> None:
        """Add the counts to the current time slot in Redis and reset them.

        On a connection error the counts are kept for the next flush.
        """
        with self._lock:
            if not self._fields:
                return
            fields, self._fields = self._fields, Counter()
            low, high = self._min, self._max
            self._min = self._max = None
        try:
            queue_scripts.add_metrics(
                [
                    METRICS_SLOT_MS,
                    METRICS_TTL_MS,
                    "" if low is None else round(low * 1e6),
                    "" if high is None else round(high * 1e6),
                    *[item for pair in fields.items() for item in pair],
                ]
            )
        except CONNECTION_ERRORS:
            # Kept for the next flush. Other errors (OOM, READONLY) would
            # fail again with the same counts, so those counts are dropped.
            with self._lock:
                self._fields.update(fields)
                if low is not None:
                    self._min = low if self._min is None else min(low, self._min)
                if high is not None:
                    self._max = high if self._max is None else max(high, self._max)
            raise


@dataclass(frozen=True)
class TaskMetrics:
    """Metrics of a queue across every process, as the Go library reports them.

    Times are seconds. Execution and wait times, arrival and completion rates
    cover the last WINDOW_SECONDS (60 s); rates are per second. Totals, and
    the success and failure rates derived from them, cover the queue's whole
    life. Percentiles are estimates within 10% of the true value.
    """

    average_execution_time: float
    min_execution_time: float
    max_execution_time: float
    p95_execution_time: float
    p99_execution_time: float
    average_wait_time: float
    p95_wait_time: float
    task_arrival_rate: float
    task_completion_rate: float
    total_tasks_completed: int
    total_tasks_failed: int
    total_tasks_retried: int
    success_rate: float
    failure_rate: float


def _percentile(buckets: Counter[int], fraction: float) -> float:
    total = sum(buckets.values())
    if total == 0:
        return 0.0
    rank = fraction * total
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return bucket_value(index)
    return bucket_value(max(buckets))


def _clamp(value: float, low: float | None, high: float | None) -> float:
    # A bucket's middle can lie outside the observed range; the true
    # percentile cannot.
    if low is not None:
        value = max(value, low)
    if high is not None:
        value = min(value, high)
    return value


def read_metrics(
    client: redis.Redis, keys: QueueKeys, counters: dict[str, int]
) -> TaskMetrics:
    """Merge the slots of the last window and compute TaskMetrics.

    Args:
        client: A client of the queue's Redis.
        keys: The queue's keys.
        counters: The queue's lifetime counters (QueueScripts.counts()).
    """
    seconds, micros = client.time()
    now = seconds + micros / 1e6
    current = int(now // SLOT_SECONDS)
    first = current - WINDOW_SECONDS // SLOT_SECONDS
    with client.pipeline(transaction=False) as pipe:
        for slot in range(first, current + 1):
            pipe.hgetall(keys.metrics(slot))
        slots = pipe.execute()

    totals: Counter[str] = Counter()
    execution: Counter[int] = Counter()
    waits: Counter[int] = Counter()
    low: float | None = None
    high: float | None = None
    for fields in slots:
        for raw_key, raw_value in fields.items():
            key = raw_key.decode()
            value = int(raw_value)
            if key.startswith("e:"):
                execution[int(key[2:])] += value
            elif key.startswith("w:"):
                waits[int(key[2:])] += value
            elif key == "e_min_us":
                low = value / 1e6 if low is None else min(low, value / 1e6)
            elif key == "e_max_us":
                high = value / 1e6 if high is None else max(high, value / 1e6)
            else:
                totals[key] += value

    runs = sum(execution.values())
    span = now - first * SLOT_SECONDS
    completed = counters.get("completed", 0) + counters.get("run_task_completed", 0)
    failed = sum(
        counters.get(name, 0)
        for name in ("failed", "lost", "dead_lettered", "run_task_failed")
    )
    finished = completed + failed
    return TaskMetrics(
        average_execution_time=totals["e_sum_us"] / 1e6 / runs if runs else 0.0,
        min_execution_time=low or 0.0,
        max_execution_time=high or 0.0,
        p95_execution_time=_clamp(_percentile(execution, 0.95), low, high),
        p99_execution_time=_clamp(_percentile(execution, 0.99), low, high),
        average_wait_time=totals["w_sum_us"] / 1e6 / totals["waited"]
        if totals["waited"]
        else 0.0,
        p95_wait_time=_percentile(waits, 0.95),
        task_arrival_rate=totals["arrived"] / span,
        task_completion_rate=totals[COMPLETED] / span,
        total_tasks_completed=completed,
        total_tasks_failed=failed,
        total_tasks_retried=counters.get("retried", 0)
        + counters.get("run_task_retried", 0),
        success_rate=completed / finished if finished else 0.0,
        failure_rate=failed / finished if finished else 0.0,
    )
