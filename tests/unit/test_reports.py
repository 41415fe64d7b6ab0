"""The reporter thread that writes a worker's task lines and records its metrics."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from tasker_redis import metrics, reports, scripts
from tasker_redis.outcomes import Outcome
from tasker_redis.reports import Reporter, TaskReport

# Seconds close() may wait for the reporter thread.
CLOSE_TIMEOUT = 10.0


class Events:
    """A metrics collector that keeps every event with the thread it came from."""

    def __init__(self) -> None:
        self.events: list[metrics.TaskEvent] = []
        self.threads: list[str] = []

    def record(self, event: metrics.TaskEvent) -> None:
        self.events.append(event)
        self.threads.append(threading.current_thread().name)


class RaisingOnce(logging.Handler):
    """A log handler whose first emit raises, as a broken handler would."""

    def __init__(self) -> None:
        super().__init__()
        self.raised = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.raised:
            self.raised = True
            raise OSError("log disk full")


@pytest.fixture
def worker_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tasker_redis.worker")
    level = logger.level
    yield logger
    logger.setLevel(level)


def report(task_id: str) -> TaskReport:
    outcome = Outcome(b"result", scripts.COMPLETED, "completed")
    return TaskReport(task_id, "unit.reports.task", outcome, 0.25, 0.5, 1)


def test_reporter_writes_lines_and_metrics(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tasker_redis.worker")
    events = Events()
    reporter = Reporter("q", metrics.MetricsRecorder(), events)

    reporter.add([report("a"), report("b")])
    reporter.add([report("c")])
    reporter.close(CLOSE_TIMEOUT)

    assert [event.task_id for event in events.events] == ["a", "b", "c"]
    assert [event.outcome for event in events.events] == [metrics.COMPLETED] * 3
    assert events.threads == [f"{threading.current_thread().name}-reports"] * 3
    for task_id in ("a", "b", "c"):
        line = f"task {task_id} unit.reports.task completed in 0.250 s"
        assert line in caplog.text
    assert "(waited 0.500 s, attempt 1)" in caplog.text


def test_reporter_survives_raising_handler(
    worker_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tasker_redis.worker")
    handler = RaisingOnce()
    worker_logger.addHandler(handler)
    events = Events()
    reporter = Reporter("q", metrics.MetricsRecorder(), events)
    try:
        reporter.add([report("a")])
        reporter.add([report("b")])
        reporter.close(CLOSE_TIMEOUT)
    finally:
        worker_logger.removeHandler(handler)

    assert handler.raised
    # Metrics come before the lines, so the failed line lost no event.
    assert [event.task_id for event in events.events] == ["a", "b"]
    assert "task b unit.reports.task completed" in caplog.text


def test_reporter_writes_inline_when_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports, "MAX_WAITING_BATCHES", 0)
    events = Events()
    reporter = Reporter("q", metrics.MetricsRecorder(), events)

    reporter.add([report("a")])
    reporter.close(CLOSE_TIMEOUT)

    assert events.threads == [threading.current_thread().name]


def test_reporter_without_reports_starts_no_thread() -> None:
    before = threading.active_count()
    reporter = Reporter("q", metrics.MetricsRecorder(), None)

    reporter.add([])

    assert threading.active_count() == before
    reporter.close(CLOSE_TIMEOUT)
