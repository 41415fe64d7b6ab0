"""The `tasker stats` command: queue depths, counters and live workers."""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from typing import Any

import click
import redis

from tasker_redis.admin import DEFAULT_ALIVE_WINDOW, QueueAdmin, WorkerStatus
from tasker_redis.metrics import WINDOW_SECONDS, TaskMetrics, read_metrics
from tasker_redis.scripts import QueueCounts

from .connect import open_admin
from .formatting import format_duration, format_table, format_timestamp
from .options import connection_options

# Counters shown even before the first task increments them.
KNOWN_COUNTERS = ("queued", "completed", "failed", "retried", "dead_lettered", "lost")


@click.command()
@connection_options
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Refresh every SECONDS seconds until Ctrl-C.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object; with --watch, one per line.",
)
@click.option(
    "--lease-timeout",
    type=click.FloatRange(min=0.3),
    default=DEFAULT_ALIVE_WINDOW,
    show_default=True,
    metavar="SECONDS",
    help="The workers' Config.lease_timeout. A worker counts as live while "
    "its last heartbeat is at most this many seconds old.",
)
def stats(
    redis_url: str | None,
    queue: str | None,
    watch: float | None,
    as_json: bool,
    lease_timeout: float,
) -> None:
    """Show a queue's waiting tasks, dead letters, counters and live workers.

    Counters count since the queue was first used.
    """
    with open_admin(redis_url, queue) as admin:
        admin.alive_window = lease_timeout
        if watch is None:
            click.echo(_render(admin, as_json))
        else:
            _watch(admin, watch, as_json)


def _watch(admin: QueueAdmin, interval: float, as_json: bool) -> None:
    # On a terminal each snapshot replaces the last one. Into a pipe or a
    # file they follow one another, so the output stays a readable log.
    in_place = not as_json and sys.stdout.isatty()
    # Ctrl-C ends the watch even when a parent process ignores SIGINT, which
    # children inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            try:
                text = _render(admin, as_json)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                click.echo(
                    f"Error: cannot read queue {admin.keys.queue!r}: {exc}; "
                    f"retrying in {interval:g} s",
                    err=True,
                )
            else:
                if in_place:
                    click.clear()
                click.echo(text)
                if not as_json and not in_place:
                    click.echo()
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _render(admin: QueueAdmin, as_json: bool) -> str:
    counts = admin.counts()
    workers = admin.workers()
    task_metrics = read_metrics(admin.client, admin.keys, counts.counters)
    if as_json:
        snapshot = _snapshot_json(admin.keys.queue, counts, workers)
        snapshot["metrics"] = dataclasses.asdict(task_metrics)
        return json.dumps(snapshot)
    text = _snapshot_text(admin.keys.queue, counts, workers)
    return text + "\n\n" + _metrics_text(task_metrics)


def _metrics_text(task_metrics: TaskMetrics) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    return "\n".join(
        [
            f"Last {WINDOW_SECONDS} s",
            f"  arrivals       {task_metrics.task_arrival_rate:.2f}/s",
            f"  completions    {task_metrics.task_completion_rate:.2f}/s",
            f"  execution      average {ms(task_metrics.average_execution_time)}, "
            f"p95 {ms(task_metrics.p95_execution_time)}, "
            f"p99 {ms(task_metrics.p99_execution_time)}, "
            f"max {ms(task_metrics.max_execution_time)}",
            f"  wait           average {ms(task_metrics.average_wait_time)}, "
            f"p95 {ms(task_metrics.p95_wait_time)}",
            f"  success rate   {task_metrics.success_rate:.1%} (all time)",
        ]
    )


def _counters(counts: QueueCounts) -> dict[str, int]:
    counters = dict.fromkeys(KNOWN_COUNTERS, 0)
    counters.update(counts.counters)
    return counters


def _snapshot_json(
    queue: str, counts: QueueCounts, workers: list[WorkerStatus]
) -> dict[str, Any]:
    return {
        "queue": queue,
        "time": time.time(),
        "queued": {"high": counts.high, "normal": counts.normal},
        "in_flight": counts.in_flight,
        "dead_letters": counts.dead_letters,
        "counters": _counters(counts),
        "workers": [
            {
                "id": worker.worker_id,
                "host": worker.host,
                "pid": worker.pid,
                "current_task": worker.current_task or None,
                "current_task_name": worker.current_task_name or None,
                "uptime": None if worker.uptime is None else round(worker.uptime, 3),
                "heartbeat_age": worker.heartbeat_age,
            }
            for worker in workers
        ],
    }


def _snapshot_text(queue: str, counts: QueueCounts, workers: list[WorkerStatus]) -> str:
    counters = ", ".join(f"{name} {value}" for name, value in _counters(counts).items())
    lines = [
        f"Queue {queue!r} at {format_timestamp(time.time())}",
        f"  waiting        {counts.high + counts.normal} "
        f"(high priority {counts.high}, normal {counts.normal})",
        f"  in flight      {counts.in_flight}",
        f"  dead letters   {counts.dead_letters}",
        f"  counters       {counters}",
        f"  live workers   {len(workers)}",
    ]
    if workers:
        rows = [_worker_row(worker) for worker in workers]
        table = format_table(
            ("WORKER", "HOST", "PID", "UPTIME", "HEARTBEAT", "TASK"), rows
        )
        lines.extend(["", table])
    return "\n".join(lines)


def _worker_row(worker: WorkerStatus) -> list[str]:
    task = "idle"
    if worker.current_task:
        name = worker.current_task_name or "?"
        task = f"{worker.current_task} ({name})"
    return [
        worker.worker_id,
        worker.host or "?",
        str(worker.pid) if worker.pid is not None else "?",
        format_duration(worker.uptime) if worker.uptime is not None else "?",
        f"{format_duration(worker.heartbeat_age)} ago",
        task,
    ]
