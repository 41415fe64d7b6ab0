"""`tasker worker`: run worker processes for a Config."""

from __future__ import annotations

import logging
import sys

import click

from tasker_redis import ConfigError, TaskerError
from tasker_redis.supervisor import Supervisor

from .options import apply_overrides, connection_options, load_config

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
)
THREADS_LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(threadName)s "
    "%(name)s: %(message)s"
)


@click.command()
@click.argument("spec", metavar="MODULE:ATTRIBUTE")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes to keep running; overrides the Config's worker_count.",
)
@click.option(
    "--threads",
    "-t",
    type=click.IntRange(min=1),
    default=None,
    help="Threads in each worker process, each with its own resource and one "
    "task at a time; overrides the Config's worker_threads.",
)
@click.option(
    "--max-workers",
    type=click.IntRange(min=1),
    default=None,
    help="Most worker processes while the backlog grows (burst workers); "
    "overrides the Config's max_worker_count.",
)
@click.option(
    "--burst-interval",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds between burst scaling checks, 0 to turn scaling off; "
    "overrides the Config's burst_interval.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve Prometheus metrics of the queue on this TCP port "
    "(needs tasker-redis[prometheus]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the Prometheus metrics server listens on.",
)
@connection_options
@click.option(
    "--verbose", "-v", is_flag=True, help="Log at DEBUG, with task arguments."
)
def worker(
    spec: str,
    workers: int | None,
    threads: int | None,
    max_workers: int | None,
    burst_interval: float | None,
    metrics_port: int | None,
    metrics_host: str,
    redis_url: str | None,
    queue: str | None,
    verbose: bool,
) -> None:
    """Run worker processes for the Config at MODULE:ATTRIBUTE.

    Importing MODULE registers its tasks. Each worker thread creates its
    own resource with the Config's on_create and runs one task at a time,
    high priority first. SIGTERM or Ctrl-C stops after running tasks finish;
    a second one stops at once and puts running tasks back on the queue.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT
    )
    try:
        loaded = load_config(spec)
    except TaskerError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        config = apply_overrides(
            loaded,
            worker_count=workers,
            worker_threads=threads,
            max_worker_count=max_workers,
            burst_interval=burst_interval,
            redis_url=redis_url,
            queue=queue,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if config.worker_threads > 1:
        # Name the thread too, since the threads of a process share its name.
        formatter = logging.Formatter(THREADS_LOG_FORMAT)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    try:
        server = None
        if metrics_port is not None:
            from tasker_redis.prometheus import (  # noqa: PLC0415 (optional extra)
                start_metrics_server,
            )

            server = start_metrics_server(config, metrics_port, metrics_host)
        try:
            close_in_workers = [server.fileno()] if server is not None else []
            supervisor = Supervisor(
                config,
                close_in_workers=close_in_workers,
                task_modules=[spec.partition(":")[0]],
            )
            code = supervisor.run()
        finally:
            if server is not None:
                server.stop()
    except TaskerError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)
