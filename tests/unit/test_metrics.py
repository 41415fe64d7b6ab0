"""Task metrics on fakeredis: buckets, percentiles, flushes and read_metrics."""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from tasker_redis import manager as manager_module
from tasker_redis.config import Config
from tasker_redis.context import TaskContext
from tasker_redis.keys import METRICS_TTL_MS, QueueKeys
from tasker_redis.manager import TaskManager
from tasker_redis.metrics import (
    BUCKET_COUNT,
    BUCKET_GROWTH,
    BUCKET_MIN,
    COMPLETED,
    FAILED,
    RETRIED,
    SLOT_SECONDS,
    WINDOW_SECONDS,
    MetricsRecorder,
    TaskEvent,
    TaskMetrics,
    _percentile,
    bucket_of,
    bucket_value,
    notify,
    read_metrics,
)
from tasker_redis.registry import task
from tasker_redis.scripts import QueueScripts

# Milliseconds since its last heartbeat within which QueueScripts.counts()
# counts a worker as alive.
ALIVE_WINDOW_MS = 10_000
# Durations that the bucket estimates cover within 10%: above the first
# bucket, and below the upper edge of the last one (about 2.4 hours).
COVERED_MIN = BUCKET_MIN * BUCKET_GROWTH
COVERED_MAX = BUCKET_MIN * BUCKET_GROWTH**BUCKET_COUNT / BUCKET_GROWTH
# Server time, in seconds, that a frozen client reports: 2.5 s into slot 1000.
FROZEN_NOW = 1000 * SLOT_SECONDS + 2.5
FROZEN_SLOT = 1000
# First slot that read_metrics merges at FROZEN_NOW, and the span it covers.
FIRST_SLOT = FROZEN_SLOT - WINDOW_SECONDS // SLOT_SECONDS
FROZEN_SPAN = FROZEN_NOW - FIRST_SLOT * SLOT_SECONDS


class ControlledRedis(fakeredis.FakeRedis):
    """A fakeredis client whose TIME reply and script calls a test controls.

    Like FakeRedisWithInfo in conftest.py, it replies to INFO with a server
    version that TaskManager accepts.

    Attributes:
        frozen_time: (seconds, microseconds) that time() returns, or None for
            the fake server's clock. Scripts still read the server's clock.
        before_script: Called before every EVALSHA; it may raise to make the
            script call fail.
    """

    frozen_time: tuple[int, int] | None = None
    before_script: Callable[[], None] | None = None

    def info(self, section: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"redis_version": "7.4.0"}

    def time(self, **kwargs: Any) -> Any:
        if self.frozen_time is not None:
            return self.frozen_time
        return super().time(**kwargs)

    def evalsha(self, *args: Any, **kwargs: Any) -> Any:
        if self.before_script is not None:
            self.before_script()
        return super().evalsha(*args, **kwargs)


@pytest.fixture
def controlled(fake_server: fakeredis.FakeServer) -> Iterator[ControlledRedis]:
    """A ControlledRedis client of the test's fake server."""
    client = ControlledRedis(server=fake_server)
    yield client
    client.close()


@pytest.fixture
def controlled_scripts(controlled: ControlledRedis, keys: QueueKeys) -> QueueScripts:
    """The scripts of queue "q", called through the controlled client."""
    return QueueScripts(controlled, keys)


@pytest.fixture
def recorder() -> MetricsRecorder:
    return MetricsRecorder()


def run(
    outcome: str = COMPLETED,
    execution: float = 0.01,
    wait: float = 0.0,
    *,
    local: bool = False,
) -> TaskEvent:
    """Return a TaskEvent of the task "t" on queue "q"."""
    return TaskEvent("q", "t", "id", outcome, execution, wait, local=local)


def read(client: redis.Redis, keys: QueueKeys) -> TaskMetrics:
    """Return read_metrics of queue "q", with the lifetime counters in Redis."""
    counters = QueueScripts(client, keys).counts(ALIVE_WINDOW_MS).counters
    return read_metrics(client, keys, counters)


def slot_hashes(client: redis.Redis, keys: QueueKeys) -> list[dict[str, int]]:
    """Return every metrics slot hash of queue "q", with str keys and int values."""
    found = []
    for key in client.keys(keys.metrics("*")):
        fields = client.hgetall(key)
        found.append({name.decode(): int(value) for name, value in fields.items()})
    return found


def only_slot(client: redis.Redis, keys: QueueKeys) -> dict[str, int]:
    """Return the one metrics slot hash of queue "q"; fail if there are more."""
    hashes = slot_hashes(client, keys)
    assert len(hashes) == 1
    return hashes[0]


def nearest_rank(values: list[float], fraction: float) -> float:
    """Return the exact percentile: the smallest value with fraction of values <= it."""
    ordered = sorted(values)
    return ordered[math.ceil(fraction * len(ordered)) - 1]


def record_all(recorder: MetricsRecorder, durations: list[float]) -> None:
    for seconds in durations:
        recorder.record(run(execution=seconds))


# Buckets


def test_bucket_of_clamps_small_durations() -> None:
    assert bucket_of(0.0) == 0
    assert bucket_of(-1.0) == 0
    assert bucket_of(BUCKET_MIN) == 0
    assert bucket_of(BUCKET_MIN / 2) == 0


def test_bucket_of_clamps_large_durations() -> None:
    assert bucket_of(COVERED_MAX * 2) == BUCKET_COUNT - 1
    assert bucket_of(1e6) == BUCKET_COUNT - 1
    assert bucket_of(1e300) == BUCKET_COUNT - 1


def test_bucket_value_round_trips() -> None:
    for index in range(BUCKET_COUNT):
        assert bucket_of(bucket_value(index)) == index


def test_bucket_value_increases() -> None:
    for index in range(BUCKET_COUNT - 1):
        assert bucket_value(index) < bucket_value(index + 1)


def test_bucket_value_covers_two_hours() -> None:
    estimate = bucket_value(bucket_of(7200.0))

    assert estimate == pytest.approx(7200.0, rel=0.1)


@given(
    st.floats(min_value=0.0, max_value=1e9),
    st.floats(min_value=0.0, max_value=1e9),
)
def test_bucket_of_monotonic(first: float, second: float) -> None:
    low, high = sorted((first, second))

    assert bucket_of(low) <= bucket_of(high)


@given(st.floats(min_value=COVERED_MIN, max_value=COVERED_MAX))
def test_bucket_value_within_ten_percent(seconds: float) -> None:
    estimate = bucket_value(bucket_of(seconds))

    assert estimate == pytest.approx(seconds, rel=0.1)


# Percentiles


@given(
    st.lists(st.floats(min_value=1e-5, max_value=3600.0), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]),
)
def test_percentile_within_ten_percent(values: list[float], fraction: float) -> None:
    buckets = Counter(bucket_of(value) for value in values)

    estimate = _percentile(buckets, fraction)

    assert estimate == pytest.approx(nearest_rank(values, fraction), rel=0.1)


def test_percentile_of_nothing_is_zero() -> None:
    assert _percentile(Counter(), 0.95) == 0.0


def uniform(rng: random.Random) -> list[float]:
    return [rng.uniform(0.01, 0.1) for _ in range(1000)]


def exponential(rng: random.Random) -> list[float]:
    return [rng.expovariate(1 / 0.05) + 1e-4 for _ in range(1000)]


def lognormal(rng: random.Random) -> list[float]:
    return [rng.lognormvariate(math.log(0.02), 1.0) for _ in range(1000)]


def bimodal(rng: random.Random) -> list[float]:
    # 97% fast runs and 3% slow ones, so p95 and p99 fall in different modes.
    return [
        rng.uniform(0.004, 0.006) if rng.random() < 0.97 else rng.uniform(1.5, 2.5)
        for _ in range(1000)
    ]


def constant(rng: random.Random) -> list[float]:
    return [0.123] * 50


DISTRIBUTIONS = [uniform, exponential, lognormal, bimodal, constant]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_read_metrics_percentiles(
    distribution: Callable[[random.Random], list[float]],
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    durations = distribution(random.Random(7))
    record_all(recorder, durations)

    recorder.flush(queue_scripts)
    metrics = read(client, keys)

    assert metrics.p95_execution_time == pytest.approx(
        nearest_rank(durations, 0.95), rel=0.1
    )
    assert metrics.p99_execution_time == pytest.approx(
        nearest_rank(durations, 0.99), rel=0.1
    )
    # The sum is kept in whole microseconds, so the average is exact to 1 µs.
    assert metrics.average_execution_time == pytest.approx(
        sum(durations) / len(durations), abs=1e-6
    )
    assert metrics.min_execution_time == pytest.approx(min(durations), abs=1e-6)
    assert metrics.max_execution_time == pytest.approx(max(durations), abs=1e-6)


# Recording and flushing


def test_flush_writes_slot_hash(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    recorder.record(run(execution=0.25, wait=1.5))
    recorder.record(run(FAILED, execution=0.5, wait=0.5))

    recorder.flush(queue_scripts)

    fields = only_slot(client, keys)
    assert fields == {
        COMPLETED: 1,
        FAILED: 1,
        f"e:{bucket_of(0.25)}": 1,
        f"e:{bucket_of(0.5)}": 1,
        "e_sum_us": 750_000,
        f"w:{bucket_of(1.5)}": 1,
        f"w:{bucket_of(0.5)}": 1,
        "w_sum_us": 2_000_000,
        "waited": 2,
        "e_min_us": 250_000,
        "e_max_us": 500_000,
    }
    key = client.keys(keys.metrics("*"))[0]
    assert 0 < client.pttl(key) <= METRICS_TTL_MS


def test_flush_slot_is_server_time(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    seconds, _ = client.time()
    recorder.record(run())

    recorder.flush(queue_scripts)

    key = client.keys(keys.metrics("*"))[0].decode()
    slot = int(key.rsplit(":", 1)[1])
    # The flush may land in the slot after the one read just before it.
    assert slot - seconds // SLOT_SECONDS in (0, 1)


def test_flush_resets_counts(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    recorder.record(run(execution=0.1))
    recorder.flush(queue_scripts)

    recorder.flush(queue_scripts)
    recorder.record(run(execution=0.3))
    recorder.flush(queue_scripts)

    totals: Counter[str] = Counter()
    for fields in slot_hashes(client, keys):
        totals.update(fields)
    assert totals[COMPLETED] == 2
    assert totals["e_sum_us"] == 400_000


def test_flushes_merge_min_and_max(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    record_all(recorder, [0.2, 0.3])
    recorder.flush(queue_scripts)
    record_all(recorder, [0.05, 0.25])
    recorder.flush(queue_scripts)
    record_all(recorder, [0.9, 0.1])
    recorder.flush(queue_scripts)

    metrics = read(client, keys)

    assert metrics.min_execution_time == pytest.approx(0.05)
    assert metrics.max_execution_time == pytest.approx(0.9)


def test_run_task_events_have_no_wait(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    recorder.record(run(execution=0.02, wait=5.0, local=True))
    recorder.record(run(FAILED, execution=0.04, wait=5.0, local=True))

    recorder.flush(queue_scripts)
    metrics = read(client, keys)

    fields = only_slot(client, keys)
    assert "waited" not in fields
    assert "w_sum_us" not in fields
    assert not [name for name in fields if name.startswith("w:")]
    assert metrics.average_wait_time == 0.0
    assert metrics.p95_wait_time == 0.0
    assert metrics.average_execution_time == pytest.approx(0.03)


def test_wait_average_skips_run_task(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    recorder.record(run(wait=0.1))
    recorder.record(run(wait=0.3))
    recorder.record(run(wait=0.0, local=True))
    recorder.record(run(wait=0.0, local=True))

    recorder.flush(queue_scripts)
    metrics = read(client, keys)

    assert metrics.average_wait_time == pytest.approx(0.2)
    assert metrics.p95_wait_time == pytest.approx(0.3, rel=0.1)


def test_retried_run_has_no_time(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    recorder.record(run(RETRIED, execution=5.0, wait=2.0))
    recorder.record(run(execution=0.01, wait=0.5))

    recorder.flush(queue_scripts)
    metrics = read(client, keys)

    fields = only_slot(client, keys)
    assert fields[RETRIED] == 1
    assert fields["e_sum_us"] == 10_000
    assert fields["waited"] == 1
    assert metrics.max_execution_time == pytest.approx(0.01)
    assert metrics.average_execution_time == pytest.approx(0.01)
    assert metrics.average_wait_time == pytest.approx(0.5)


def test_retried_only_flush_has_no_min(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    recorder.record(run(RETRIED, execution=3.0))

    recorder.flush(queue_scripts)
    metrics = read(client, keys)

    assert only_slot(client, keys) == {RETRIED: 1}
    assert metrics.min_execution_time == 0.0
    assert metrics.max_execution_time == 0.0
    assert metrics.average_execution_time == 0.0


# Arrivals and rates


def test_enqueue_counts_arrivals(
    client: redis.Redis, keys: QueueKeys, queue_scripts: QueueScripts
) -> None:
    messages = [("a", b"message a"), ("b", b"message b"), ("c", b"message c")]
    queue_scripts.enqueue(messages, high_priority=False, once=False)
    queue_scripts.enqueue([("d", b"message d")], high_priority=True, once=True)
    # A known id is skipped and not counted again.
    queue_scripts.enqueue([("a", b"message a")], high_priority=False, once=False)

    assert only_slot(client, keys) == {"arrived": 4}
    # The first arrival set the slot's expiry, which later ones keep.
    [key] = client.keys(keys.metrics("*"))
    assert 0 < client.pttl(key) <= METRICS_TTL_MS


def test_arrival_rate_spans_window(
    controlled: ControlledRedis, keys: QueueKeys, controlled_scripts: QueueScripts
) -> None:
    messages = [(f"task-{index}", b"message") for index in range(6)]
    controlled_scripts.enqueue(messages, high_priority=False, once=False)
    # Freeze the clock that read_metrics reads at the server's time after the
    # enqueue, so its window contains that slot and the span is known.
    seconds, micros = controlled.time()
    controlled.frozen_time = (seconds, micros)
    now = seconds + micros / 1e6
    first = int(now // SLOT_SECONDS) - WINDOW_SECONDS // SLOT_SECONDS

    metrics = read(controlled, keys)

    assert metrics.task_arrival_rate == pytest.approx(6 / (now - first * SLOT_SECONDS))


def test_rates_divide_by_span(controlled: ControlledRedis, keys: QueueKeys) -> None:
    controlled.frozen_time = (int(FROZEN_NOW), 500_000)
    controlled.hset(keys.metrics(FIRST_SLOT), mapping={"arrived": 40, COMPLETED: 10})
    controlled.hset(keys.metrics(FROZEN_SLOT), mapping={"arrived": 85, COMPLETED: 15})

    metrics = read(controlled, keys)

    assert FROZEN_SPAN == 62.5
    assert metrics.task_arrival_rate == pytest.approx(125 / FROZEN_SPAN)
    assert metrics.task_completion_rate == pytest.approx(25 / FROZEN_SPAN)


def test_completion_rate_counts_flushes(
    recorder: MetricsRecorder,
    controlled: ControlledRedis,
    keys: QueueKeys,
    controlled_scripts: QueueScripts,
) -> None:
    for _ in range(5):
        recorder.record(run())
    recorder.record(run(local=True))
    recorder.record(run(FAILED))
    recorder.record(run(RETRIED))
    recorder.flush(controlled_scripts)
    seconds, micros = controlled.time()
    controlled.frozen_time = (seconds, micros)
    now = seconds + micros / 1e6
    first = int(now // SLOT_SECONDS) - WINDOW_SECONDS // SLOT_SECONDS

    metrics = read(controlled, keys)

    # Completed runs on workers and in run_task count; failures and retries
    # do not.
    span = now - first * SLOT_SECONDS
    assert metrics.task_completion_rate == pytest.approx(6 / span)
    assert metrics.task_arrival_rate == 0.0


def test_old_slots_ignored(controlled: ControlledRedis, keys: QueueKeys) -> None:
    controlled.frozen_time = (int(FROZEN_NOW), 500_000)
    old = {
        "arrived": 1000,
        COMPLETED: 1000,
        f"e:{bucket_of(30.0)}": 1000,
        "e_sum_us": 30_000_000_000,
        f"w:{bucket_of(60.0)}": 1000,
        "w_sum_us": 60_000_000_000,
        "waited": 1000,
        "e_min_us": 1,
        "e_max_us": 30_000_000,
    }
    controlled.hset(keys.metrics(FIRST_SLOT - 1), mapping=old)
    controlled.hset(keys.metrics(FIRST_SLOT - 50), mapping=old)
    current = {
        "arrived": 5,
        COMPLETED: 5,
        f"e:{bucket_of(0.2)}": 5,
        "e_sum_us": 1_000_000,
        f"w:{bucket_of(0.1)}": 5,
        "w_sum_us": 500_000,
        "waited": 5,
        "e_min_us": 150_000,
        "e_max_us": 250_000,
    }
    controlled.hset(keys.metrics(FIRST_SLOT), mapping=current)

    metrics = read(controlled, keys)

    assert metrics.task_arrival_rate == pytest.approx(5 / FROZEN_SPAN)
    assert metrics.task_completion_rate == pytest.approx(5 / FROZEN_SPAN)
    assert metrics.average_execution_time == pytest.approx(0.2)
    assert metrics.p99_execution_time == pytest.approx(0.2, rel=0.1)
    assert metrics.min_execution_time == pytest.approx(0.15)
    assert metrics.max_execution_time == pytest.approx(0.25)
    assert metrics.average_wait_time == pytest.approx(0.1)
    assert metrics.p95_wait_time == pytest.approx(0.1, rel=0.1)


# Totals


def test_totals_include_run_task(
    recorder: MetricsRecorder,
    client: redis.Redis,
    keys: QueueKeys,
    queue_scripts: QueueScripts,
) -> None:
    client.hset(
        keys.counters,
        mapping={COMPLETED: 6, FAILED: 2, "lost": 1, "dead_lettered": 1, RETRIED: 3},
    )
    recorder.record(run(local=True))
    recorder.record(run(local=True))
    recorder.record(run(FAILED, local=True))
    recorder.record(run(RETRIED, local=True))
    # Worker outcomes reach the lifetime counters through the finish and
    # retry scripts, not through the metrics flush.
    recorder.record(run())
    recorder.record(run(FAILED))

    recorder.flush(queue_scripts)
    metrics = read(client, keys)

    counters = client.hgetall(keys.counters)
    assert counters[b"run_task_completed"] == b"2"
    assert counters[b"run_task_failed"] == b"1"
    assert counters[b"run_task_retried"] == b"1"
    assert counters[b"completed"] == b"6"
    assert metrics.total_tasks_completed == 8
    assert metrics.total_tasks_failed == 5
    assert metrics.total_tasks_retried == 4
    assert metrics.success_rate == pytest.approx(8 / 13)
    assert metrics.failure_rate == pytest.approx(5 / 13)


def test_metrics_of_empty_queue(client: redis.Redis, keys: QueueKeys) -> None:
    metrics = read(client, keys)

    assert metrics == TaskMetrics(
        average_execution_time=0.0,
        min_execution_time=0.0,
        max_execution_time=0.0,
        p95_execution_time=0.0,
        p99_execution_time=0.0,
        average_wait_time=0.0,
        p95_wait_time=0.0,
        task_arrival_rate=0.0,
        task_completion_rate=0.0,
        total_tasks_completed=0,
        total_tasks_failed=0,
        total_tasks_retried=0,
        success_rate=0.0,
        failure_rate=0.0,
    )


# Failed flushes


def raise_connection_error() -> None:
    raise redis.ConnectionError("connection refused by the test")


def test_failed_flush_keeps_counts(
    recorder: MetricsRecorder,
    controlled: ControlledRedis,
    keys: QueueKeys,
    controlled_scripts: QueueScripts,
) -> None:
    controlled.before_script = raise_connection_error
    recorder.record(run(execution=0.2, wait=0.1))
    with pytest.raises(redis.ConnectionError):
        recorder.flush(controlled_scripts)
    recorder.record(run(execution=0.05, wait=0.3))
    with pytest.raises(redis.ConnectionError):
        recorder.flush(controlled_scripts)
    recorder.record(run(FAILED, execution=0.4, wait=0.2, local=True))
    assert slot_hashes(controlled, keys) == []

    controlled.before_script = None
    recorder.flush(controlled_scripts)
    metrics = read(controlled, keys)

    fields = only_slot(controlled, keys)
    assert fields[COMPLETED] == 2
    assert fields[FAILED] == 1
    assert fields["run_task_failed"] == 1
    assert fields["e_sum_us"] == 650_000
    assert fields["waited"] == 2
    assert metrics.min_execution_time == pytest.approx(0.05)
    assert metrics.max_execution_time == pytest.approx(0.4)
    assert metrics.average_wait_time == pytest.approx(0.2)
    assert metrics.total_tasks_failed == 1


def test_failed_flush_keeps_new_minimum(
    recorder: MetricsRecorder,
    controlled: ControlledRedis,
    keys: QueueKeys,
    controlled_scripts: QueueScripts,
) -> None:
    # A flush of a retried run alone sends no min and max. A run recorded by
    # another thread while that flush waits on Redis must keep its own.
    def record_then_disconnect() -> None:
        controlled.before_script = None
        recorder.record(run(execution=0.02))
        raise_connection_error()

    recorder.record(run(RETRIED))
    controlled.before_script = record_then_disconnect
    with pytest.raises(redis.ConnectionError):
        recorder.flush(controlled_scripts)

    recorder.flush(controlled_scripts)
    metrics = read(controlled, keys)

    assert only_slot(controlled, keys)[COMPLETED] == 1
    assert metrics.min_execution_time == pytest.approx(0.02)
    assert metrics.max_execution_time == pytest.approx(0.02)


# Collectors


class ListCollector:
    """A MetricsCollector that keeps every event it receives."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def record(self, event: TaskEvent) -> None:
        self.events.append(event)


class RaisingCollector:
    """A MetricsCollector that raises on every event."""

    def __init__(self) -> None:
        self.calls = 0

    def record(self, event: TaskEvent) -> None:
        self.calls += 1
        raise RuntimeError("collector is down")

    def __repr__(self) -> str:
        return "RaisingCollector()"


def test_notify_passes_event() -> None:
    collector = ListCollector()
    event = run(execution=0.3, wait=0.1)

    notify(collector, event)

    assert collector.events == [event]


def test_notify_without_collector() -> None:
    notify(None, run())


def test_notify_logs_collector_error(caplog: pytest.LogCaptureFixture) -> None:
    collector = RaisingCollector()
    caplog.set_level(logging.ERROR, logger="tasker_redis.metrics")

    notify(collector, run())

    assert collector.calls == 1
    assert len(caplog.records) == 1
    entry = caplog.records[0]
    assert entry.levelno == logging.ERROR
    assert "RaisingCollector()" in entry.getMessage()
    assert entry.exc_info is not None
    assert entry.exc_info[0] is RuntimeError


# TaskManager


@task(name="unit.metrics.double")
def double(context: TaskContext, resource: str, value: int) -> int:
    return value * 2


@task(name="unit.metrics.fail")
def fail(context: TaskContext, resource: str) -> None:
    raise ValueError("failed on purpose")


@pytest.fixture
def manager_of(
    controlled: ControlledRedis,
) -> Iterator[Callable[..., TaskManager]]:
    """Return a function that builds a TaskManager on the controlled client."""
    managers: list[TaskManager] = []

    def build(**overrides: Any) -> TaskManager:
        config = Config(
            on_create=lambda: "resource",
            on_destroy=lambda resource: None,
            redis_url="redis://127.0.0.1:1/0",
            queue="q",
            **overrides,
        )
        built = TaskManager(config, client=controlled)
        managers.append(built)
        return built

    yield build
    for built in managers:
        built.kill()


def test_manager_metrics_count_run_task(
    manager_of: Callable[..., TaskManager],
) -> None:
    collector = ListCollector()
    task_manager = manager_of(metrics_collector=collector)

    assert task_manager.run_task(double, 2) == 4
    assert task_manager.run_task(double, 5) == 10
    with pytest.raises(ValueError, match="failed on purpose"):
        task_manager.run_task(fail)
    metrics = task_manager.metrics()

    assert metrics.total_tasks_completed == 2
    assert metrics.total_tasks_failed == 1
    assert metrics.success_rate == pytest.approx(2 / 3)
    assert metrics.average_wait_time == 0.0
    outcomes = [(event.task_name, event.outcome) for event in collector.events]
    assert outcomes == [
        ("unit.metrics.double", COMPLETED),
        ("unit.metrics.double", COMPLETED),
        ("unit.metrics.fail", FAILED),
    ]
    assert all(event.local for event in collector.events)


def test_run_task_survives_metrics_error(
    manager_of: Callable[..., TaskManager],
    controlled: ControlledRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Any reply error of the metrics script, such as OOM or READONLY from
    # Redis, must not turn a task that returned into a failed call.
    monkeypatch.setattr(manager_module, "LOCAL_METRICS_FLUSH_INTERVAL", 0.0)
    task_manager = manager_of()

    def reject_write() -> None:
        raise redis.ResponseError(
            "OOM command not allowed when used memory > 'maxmemory'"
        )

    controlled.before_script = reject_write

    assert task_manager.run_task(double, 21) == 42
