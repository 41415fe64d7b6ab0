"""Prometheus export: start_metrics_server scraped over HTTP on a loopback port.

Each test reads the real state of a queue on a private redis-server, with
real `tasker worker` processes where it needs runs, and parses the scraped
page with prometheus_client's own parser.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from apps import metrics_tasks
from apps.metrics_tasks import fail_ms, flaky_ms, hold, sleep_ms
from helpers import wait_until
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from tasker_redis import (
    Config,
    ConfigError,
    TaskerError,
    TaskFailed,
    TaskManager,
    TaskNotRegistered,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.local_server import LocalRedisServer, free_port
from tasker_redis.metrics import SLOT_SECONDS, WINDOW_SECONDS
from tasker_redis.prometheus import MetricsServer, QueueCollector, start_metrics_server

pytestmark = pytest.mark.e2e

QUEUE = "prom"
SPEC = "apps.metrics_tasks:config"
# Seconds a test waits for a result, a flush or an HTTP reply.
WAIT = 30
# Seconds a run may take beyond its sleep on a busy machine.
SLACK = 0.015
MAX_SPAN = WINDOW_SECONDS + SLOT_SECONDS
MIN_SPAN = WINDOW_SECONDS

# Every family that a scrape of a reachable Redis returns.
FAMILIES = {
    "tasker_up",
    "tasker_queued_tasks",
    "tasker_in_flight_tasks",
    "tasker_active_workers",
    "tasker_dead_letter_tasks",
    "tasker_tasks_completed",
    "tasker_tasks_failed",
    "tasker_tasks_retried",
    "tasker_execution_time_average_seconds",
    "tasker_execution_time_min_seconds",
    "tasker_execution_time_max_seconds",
    "tasker_execution_time_p95_seconds",
    "tasker_execution_time_p99_seconds",
    "tasker_wait_time_average_seconds",
    "tasker_wait_time_p95_seconds",
    "tasker_task_arrivals_per_second",
    "tasker_task_completions_per_second",
}
COUNTERS = {"tasker_tasks_completed", "tasker_tasks_failed", "tasker_tasks_retried"}

Families = dict[str, Metric]


@pytest.fixture
def config(redis_url: str) -> Config:
    return metrics_tasks.build_config(redis_url=redis_url, queue=QUEUE)


@pytest.fixture
def server(config: Config) -> Iterator[MetricsServer]:
    """A metrics server of QUEUE on a loopback port that the system chose."""
    started = start_metrics_server(config, 0)
    yield started
    started.stop()


@pytest.fixture
def manager(config: Config) -> Iterator[TaskManager]:
    task_manager = TaskManager(config)
    yield task_manager
    task_manager.kill()


def scrape(url: str) -> Families:
    """Fetch the metrics page and return its families by name."""
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: Families, name: str, **labels: str) -> float:
    """Return the one sample of a family with queue=QUEUE and the given labels."""
    family = families[name]
    expected_labels = {"queue": QUEUE, **labels}
    matches = [
        sample.value for sample in family.samples if sample.labels == expected_labels
    ]
    assert len(matches) == 1
    return matches[0]


def slot_total(client: redis.Redis, field: str) -> int:
    """Return the sum of one field over every metrics slot hash of QUEUE."""
    keys = client.keys(QueueKeys(QUEUE).metrics("*"))
    return sum(int(client.hget(key, field) or 0) for key in keys)


def test_collector_in_own_registry(config: Config, redis_client: redis.Redis) -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(config, redis_client))
    redis_client.hset(QueueKeys(QUEUE).counters, "completed", 7)

    text = generate_latest(registry).decode()

    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(families) == FAMILIES
    assert value(families, "tasker_tasks_completed") == 7


def test_scrape_of_empty_queue(server: MetricsServer) -> None:
    families = scrape(server.url)

    assert set(families) == FAMILIES
    for name in COUNTERS:
        assert families[name].type == "counter"
        assert families[name].samples[0].name == f"{name}_total"
    assert value(families, "tasker_up") == 1
    assert value(families, "tasker_queued_tasks", priority="normal") == 0
    assert value(families, "tasker_queued_tasks", priority="high") == 0
    assert value(families, "tasker_active_workers") == 0
    assert value(families, "tasker_tasks_completed") == 0
    assert value(families, "tasker_execution_time_p95_seconds") == 0
    assert value(families, "tasker_task_arrivals_per_second") == 0


def test_scrape_matches_queue(
    server: MetricsServer,
    manager: TaskManager,
    start_workers: Any,
    redis_client: redis.Redis,
) -> None:
    start_workers(SPEC, env={"METRICS_QUEUE": QUEUE})
    sleeps = [10, 10, 20, 50]
    futures = [manager.queue_task_async(sleep_ms, ms) for ms in sleeps]
    failure = manager.queue_task_async(fail_ms, 20)
    flaky = manager.queue_task_async(flaky_ms, 10)
    missing = manager.queue_task_async("metrics.missing")
    assert [future.result(timeout=WAIT) for future in futures] == sleeps
    with pytest.raises(TaskFailed):
        failure.result(timeout=WAIT)
    assert flaky.result(timeout=WAIT) == 10
    with pytest.raises(TaskNotRegistered):
        missing.result(timeout=WAIT)
    # One task keeps the only worker busy while others wait in both queues.
    busy = manager.queue_task_async(hold, "busy")
    wait_until(lambda: manager.stats().in_flight_tasks == 1, timeout=WAIT)
    for _ in range(3):
        manager.queue_task_async(sleep_ms, 10)
    for _ in range(2):
        manager.queue_task_with_priority_async(sleep_ms, 10)
    assert manager.flush(timeout=WAIT)
    wait_until(lambda: slot_total(redis_client, "completed") == 5, timeout=WAIT)

    families = scrape(server.url)
    metrics = manager.metrics()

    assert value(families, "tasker_up") == 1
    assert value(families, "tasker_queued_tasks", priority="normal") == 3
    assert value(families, "tasker_queued_tasks", priority="high") == 2
    assert value(families, "tasker_in_flight_tasks") == 1
    assert value(families, "tasker_active_workers") == 1
    assert value(families, "tasker_dead_letter_tasks") == 1
    assert value(families, "tasker_tasks_completed") == 5
    # The failure and the dead-lettered task.
    assert value(families, "tasker_tasks_failed") == 2
    assert value(families, "tasker_tasks_retried") == 1
    # Times come from the same Redis data as TaskManager.metrics().
    times = {
        "tasker_execution_time_average_seconds": metrics.average_execution_time,
        "tasker_execution_time_min_seconds": metrics.min_execution_time,
        "tasker_execution_time_max_seconds": metrics.max_execution_time,
        "tasker_execution_time_p95_seconds": metrics.p95_execution_time,
        "tasker_execution_time_p99_seconds": metrics.p99_execution_time,
        "tasker_wait_time_average_seconds": metrics.average_wait_time,
        "tasker_wait_time_p95_seconds": metrics.p95_wait_time,
    }
    for name, expected in times.items():
        assert value(families, name) == expected
    # Timed runs: the four sleeps, the failure and the flaky task's second run.
    average = (10 + 10 + 20 + 50 + 20 + 10) / 6 / 1000
    assert value(families, "tasker_execution_time_average_seconds") >= average
    assert value(families, "tasker_execution_time_average_seconds") <= average + SLACK
    assert value(families, "tasker_execution_time_max_seconds") >= 0.050
    assert value(families, "tasker_execution_time_p99_seconds") >= 0.050 / 1.1
    assert value(families, "tasker_execution_time_p99_seconds") <= 0.065 * 1.1
    assert value(families, "tasker_wait_time_average_seconds") > 0
    # 13 tasks were queued and 5 completed in the window.
    arrivals = value(families, "tasker_task_arrivals_per_second")
    assert arrivals >= 13 / MAX_SPAN
    assert arrivals <= 13 / MIN_SPAN
    completions = value(families, "tasker_task_completions_per_second")
    assert completions >= 5 / MAX_SPAN
    assert completions <= 5 / MIN_SPAN

    redis_client.rpush(metrics_tasks.gate_key("busy"), "open")
    assert busy.result(timeout=WAIT) == "busy"


def test_scrape_counts_run_task(server: MetricsServer, manager: TaskManager) -> None:
    assert manager.run_task(sleep_ms, 10) == 10
    with pytest.raises(ValueError, match="failed after 10 ms"):
        manager.run_task(fail_ms, 10)
    # metrics() flushes this manager's run_task counts to Redis.
    manager.metrics()

    families = scrape(server.url)

    assert value(families, "tasker_tasks_completed") == 1
    assert value(families, "tasker_tasks_failed") == 1
    assert value(families, "tasker_execution_time_min_seconds") >= 0.010
    assert value(families, "tasker_wait_time_average_seconds") == 0


def test_scrape_while_redis_down(
    server: MetricsServer,
    redis_server: LocalRedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tasker_redis.prometheus")
    assert value(scrape(server.url), "tasker_up") == 1
    redis_server.stop()

    down = scrape(server.url)
    again = scrape(server.url)

    assert set(down) == {"tasker_up"}
    assert value(down, "tasker_up") == 0
    assert value(again, "tasker_up") == 0
    redis_server.start()
    assert value(scrape(server.url), "tasker_up") == 1
    # One warning for the outage, however many scrapes failed.
    logged = [r for r in caplog.records if r.name == "tasker_redis.prometheus"]
    warnings = [r for r in logged if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"could not read queue {QUEUE}" in warnings[0].getMessage()
    infos = [r.getMessage() for r in logged if r.levelno == logging.INFO]
    assert f"metrics scrapes read queue {QUEUE} from Redis again" in infos


def test_stop_closes_port(config: Config) -> None:
    started = start_metrics_server(config, 0)
    url = started.url
    assert value(scrape(url), "tasker_up") == 1

    started.stop()

    with pytest.raises(urllib.error.URLError):
        scrape(url)


def test_serves_on_ipv6_loopback(config: Config) -> None:
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    with start_metrics_server(config, 0, addr="::1") as started:
        assert started.url == f"http://[::1]:{started.port}/metrics"
        assert value(scrape(started.url), "tasker_up") == 1


def test_port_in_use(config: Config) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(
            TaskerError, match=f"cannot serve metrics on 127.0.0.1 port {port}"
        ):
            start_metrics_server(config, port)


@pytest.mark.parametrize("port", [-1, 65536, True])
def test_invalid_port(config: Config, port: Any) -> None:
    with pytest.raises(ConfigError, match="invalid metrics port"):
        start_metrics_server(config, port)


def test_missing_client_library(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import prometheus_client` raise ImportError.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)

    with pytest.raises(TaskerError, match=r"pip install 'tasker-redis\[prometheus\]'"):
        start_metrics_server(config, 0)
    with pytest.raises(TaskerError, match="prometheus-client"):
        QueueCollector(config, redis.Redis())


def test_import_without_client_library() -> None:
    # The CLI may import the module at startup, where the extra is optional.
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "import tasker_redis.prometheus\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )

    assert completed.returncode == 0, completed.stderr


def test_worker_metrics_port_serves_queue(
    start_workers: Any, manager: TaskManager
) -> None:
    # `tasker worker --metrics-port` serves the queue while it runs, and its
    # worker processes do not keep the port open after the supervisor exits.
    port = free_port()
    workers = start_workers(
        "apps.metrics_tasks:config",
        "--metrics-port",
        str(port),
        env={"METRICS_QUEUE": QUEUE},
    )
    manager.queue_task(sleep_ms, 1)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: value(scrape(url), "tasker_tasks_completed") == 1)

    workers.signal(signal.SIGTERM)
    exit_code = workers.wait()

    assert exit_code == 0
    assert not listening(port)


def listening(port: int) -> bool:
    """Return True if something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
