"""Prometheus export of one queue's state and metrics.

QueueCollector reads the queue from Redis on every scrape, so any process can
export the metrics of every worker and producer of the queue. It needs the
optional prometheus-client package (pip install 'tasker-redis[prometheus]'),
which is imported only when a collector is created, so importing this module
works without it.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis

from tasker_redis.config import Config
from tasker_redis.connection import create_client
from tasker_redis.errors import ConfigError, TaskerError
from tasker_redis.keys import QueueKeys
from tasker_redis.metrics import TaskMetrics, read_metrics
from tasker_redis.scripts import QueueCounts, QueueScripts

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger(__name__)

# Errors that make a scrape report tasker_up 0 instead of failing the request.
SCRAPE_ERRORS = (redis.RedisError, OSError)

INSTALL_HINT = "pip install 'tasker-redis[prometheus]'"

UP_HELP = "1 if this scrape read the queue from Redis, 0 if it failed."


def _require_prometheus() -> None:
    """Import prometheus_client, or raise TaskerError with the install command."""
    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError as exc:
        raise TaskerError(
            "Prometheus export needs the prometheus-client package, which is not "
            f"installed: {INSTALL_HINT}"
        ) from exc


class QueueCollector:
    """A prometheus_client collector of one queue, read from Redis on each scrape.

    It implements the prometheus_client.registry.Collector interface, so it
    can be registered in any CollectorRegistry.

    Every metric has a `queue` label. Counters and depths cover every process
    of the queue. Times and rates cover the last 60 seconds, as in
    TaskManager.metrics(). When Redis cannot be read, a scrape returns only
    tasker_up with the value 0.
    """

    def __init__(self, config: Config, client: redis.Redis) -> None:
        """Read config.queue through client.

        Raises:
            TaskerError: prometheus-client is not installed.
        """
        _require_prometheus()
        self.config = config
        self._client = client
        self._keys = QueueKeys(config.queue)
        self._scripts = QueueScripts(client, self._keys)
        # Workers seen within one lease count as active, as in TaskManager.stats().
        self._alive_window_ms = int(config.lease_timeout * 1000)
        self._failing = False
        self._failing_lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        """Read the queue from Redis and yield its metric families."""
        try:
            counts = self._scripts.counts(self._alive_window_ms)
            metrics = read_metrics(self._client, self._keys, counts.counters)
        except SCRAPE_ERRORS as exc:
            self._note_failure(exc)
            yield self._gauge("tasker_up", UP_HELP, 0)
            return
        self._note_success()
        yield self._gauge("tasker_up", UP_HELP, 1)
        yield from self._state_metrics(counts)
        yield from self._counter_metrics(metrics)
        yield from self._window_metrics(metrics)

    def _state_metrics(self, counts: QueueCounts) -> Iterator[Metric]:
        from prometheus_client.metrics_core import GaugeMetricFamily  # noqa: PLC0415

        queued = GaugeMetricFamily(
            "tasker_queued_tasks",
            "Tasks waiting in the queue, by priority (normal or high).",
            labels=["queue", "priority"],
        )
        queued.add_metric([self.config.queue, "normal"], counts.normal)
        queued.add_metric([self.config.queue, "high"], counts.high)
        yield queued
        yield self._gauge(
            "tasker_in_flight_tasks",
            "Tasks leased to workers and not finished.",
            counts.in_flight,
        )
        yield self._gauge(
            "tasker_active_workers",
            "Worker processes whose heartbeat Redis received within the lease timeout.",
            counts.workers_alive,
        )
        yield self._gauge(
            "tasker_dead_letter_tasks",
            "Entries in the dead-letter list.",
            counts.dead_letters,
        )

    def _counter_metrics(self, metrics: TaskMetrics) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily  # noqa: PLC0415

        totals = (
            (
                "tasker_tasks_completed",
                "Tasks that returned a value, run_task calls included.",
                metrics.total_tasks_completed,
            ),
            (
                "tasker_tasks_failed",
                "Tasks that ended with an error, lost or dead-lettered, run_task "
                "calls included.",
                metrics.total_tasks_failed,
            ),
            (
                "tasker_tasks_retried",
                "Retries after failures on an unhealthy resource, run_task calls "
                "included.",
                metrics.total_tasks_retried,
            ),
        )
        for name, documentation, value in totals:
            counter = CounterMetricFamily(name, documentation, labels=["queue"])
            counter.add_metric([self.config.queue], value)
            yield counter

    def _window_metrics(self, metrics: TaskMetrics) -> Iterator[Metric]:
        window = "over the last 60 s"
        gauges = (
            (
                "tasker_execution_time_average_seconds",
                f"Average run time of a task {window}.",
                metrics.average_execution_time,
            ),
            (
                "tasker_execution_time_min_seconds",
                f"Shortest run time of a task {window}.",
                metrics.min_execution_time,
            ),
            (
                "tasker_execution_time_max_seconds",
                f"Longest run time of a task {window}.",
                metrics.max_execution_time,
            ),
            (
                "tasker_execution_time_p95_seconds",
                f"95th percentile of task run times {window}, an estimate within 10%.",
                metrics.p95_execution_time,
            ),
            (
                "tasker_execution_time_p99_seconds",
                f"99th percentile of task run times {window}, an estimate within 10%.",
                metrics.p99_execution_time,
            ),
            (
                "tasker_wait_time_average_seconds",
                f"Average time from queueing to start on a worker {window}.",
                metrics.average_wait_time,
            ),
            (
                "tasker_wait_time_p95_seconds",
                "95th percentile of the time from queueing to start on a worker "
                f"{window}, an estimate within 10%.",
                metrics.p95_wait_time,
            ),
            (
                "tasker_task_arrivals_per_second",
                f"Tasks queued per second {window}.",
                metrics.task_arrival_rate,
            ),
            (
                "tasker_task_completions_per_second",
                f"Tasks completed per second {window}, run_task calls included.",
                metrics.task_completion_rate,
            ),
        )
        for name, documentation, value in gauges:
            yield self._gauge(name, documentation, value)

    def _gauge(self, name: str, documentation: str, value: float) -> Metric:
        from prometheus_client.metrics_core import GaugeMetricFamily  # noqa: PLC0415

        gauge = GaugeMetricFamily(name, documentation, labels=["queue"])
        gauge.add_metric([self.config.queue], value)
        return gauge

    def _note_failure(self, exc: Exception) -> None:
        # One warning per outage: scrapes repeat every few seconds.
        with self._failing_lock:
            first = not self._failing
            self._failing = True
        level = logging.WARNING if first else logging.DEBUG
        logger.log(
            level,
            "could not read queue %s from Redis at %s for a metrics scrape: %s",
            self.config.queue,
            self.config.masked_redis_url,
            exc,
        )

    def _note_success(self) -> None:
        with self._failing_lock:
            recovered = self._failing
            self._failing = False
        if recovered:
            logger.info(
                "metrics scrapes read queue %s from Redis again", self.config.queue
            )


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    # Threads of unfinished scrapes must not keep the process alive.
    daemon_threads = True


class _ThreadingServerIPv6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Skip the access log line that wsgiref writes to stderr per request."""


class MetricsServer:
    """An HTTP server that serves one queue's metrics in a daemon thread.

    Every path returns the metrics in the Prometheus text format, as
    prometheus_client.make_wsgi_app serves them.

    Attributes:
        registry: The CollectorRegistry that holds only the queue's collector.
    """

    def __init__(
        self,
        httpd: WSGIServer,
        thread: threading.Thread,
        client: redis.Redis,
        registry: CollectorRegistry,
    ) -> None:
        self._httpd = httpd
        self._thread = thread
        self._client = client
        self.registry = registry

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on, chosen by the system if 0 was requested."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The URL of the metrics page."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def fileno(self) -> int:
        """Return the listening socket's file descriptor."""
        return int(self._httpd.socket.fileno())

    def stop(self) -> None:
        """Stop serving, close the listening socket and the Redis client."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._client.close()
        logger.info("stopped the metrics server at %s", self.url)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_metrics_server(
    config: Config, port: int, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve the metrics of config.queue over HTTP for Prometheus to scrape.

    The server runs in a daemon thread with its own Redis client and its own
    CollectorRegistry, which holds only a QueueCollector, so it exports no
    process metrics of the caller. Call stop() on the result to shut it down.

    Args:
        config: The queue and the Redis server to read.
        port: TCP port to listen on; 0 lets the system choose a free one,
            which MetricsServer.port returns.
        addr: Address to listen on. The loopback default keeps the page
            private to the machine; "0.0.0.0" or "::" expose it.

    Raises:
        TaskerError: prometheus-client is not installed, or the address
            cannot be bound.
        ConfigError: port is not an integer from 0 to 65535.
    """
    _require_prometheus()
    from prometheus_client import CollectorRegistry, make_wsgi_app  # noqa: PLC0415

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(
            f"invalid metrics port {port!r}: use 1 to 65535, or 0 for a free port"
        )
    server_class = _server_class(addr, port)
    registry = CollectorRegistry(auto_describe=False)
    client = create_client(config, name="tasker-metrics")
    registry.register(QueueCollector(config, client))
    try:
        httpd = make_server(
            addr,
            port,
            make_wsgi_app(registry),
            server_class=server_class,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        client.close()
        raise TaskerError(
            f"cannot serve metrics on {addr} port {port}: {exc}; choose a free port "
            "or another address"
        ) from exc
    thread = threading.Thread(
        target=httpd.serve_forever, name="tasker-metrics-server", daemon=True
    )
    thread.start()
    server = MetricsServer(httpd, thread, client, registry)
    logger.info("serving metrics of queue %s at %s", config.queue, server.url)
    return server


def _server_class(addr: str, port: int) -> type[_ThreadingServer]:
    try:
        infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TaskerError(
            f"cannot serve metrics on {addr!r}: the address does not resolve ({exc})"
        ) from exc
    if infos[0][0] == socket.AF_INET6:
        return _ThreadingServerIPv6
    return _ThreadingServer
