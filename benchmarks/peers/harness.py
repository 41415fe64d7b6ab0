"""Run every adapter against one private redis-server and collect the figures."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import redis

from benchmarks.peers import report
from benchmarks.peers.base import CONCURRENCY_ENV, URL_ENV, Adapter, AdapterUnavailable
from benchmarks.peers.client import ADAPTERS, load_adapter
from benchmarks.peers.processes import ProcessGroup, PssSampler
from tasker_redis.local_server import LocalRedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]

# Seconds one setup may take in all before its client is killed.
SETUP_TIMEOUT = 300.0
# The Redis port that this benchmark must never use.
DEFAULT_REDIS_PORT = 6379


@dataclass(frozen=True)
class Sizes:
    """Task counts of one run."""

    tasks: int = 5000
    round_trips: int = 300
    sleep_tasks: int = 2000
    warmup: int = 20

    def options(self) -> list[str]:
        """Return the sizes as options of the client command."""
        return [
            f"--tasks={self.tasks}",
            f"--round-trips={self.round_trips}",
            f"--sleep-tasks={self.sleep_tasks}",
            f"--warmup={self.warmup}",
        ]


FULL = Sizes()
QUICK = Sizes(tasks=500, round_trips=50, sleep_tasks=200, warmup=5)


@dataclass
class Row:
    """The figures of one adapter in one setup, or why there are none.

    Rates are tasks per second, latencies p50, p95 and p99 in milliseconds,
    memory MiB. peak_rss is the sum of VmHWM over the worker's processes,
    peak_pss the peak of their summed proportional set size.
    """

    key: str
    system: str
    concurrency: int | None = None
    execution: str = ""
    batching: str = ""
    settings: str = ""
    status: str = "ok"
    note: str = ""
    enqueue_rate: float | None = None
    throughput: float | None = None
    latency: list[float] | None = None
    payload_throughput: float | None = None
    payload_latency: list[float] | None = None
    sleep_throughput: float | None = None
    peak_rss: float | None = None
    peak_pss: float | None = None
    tasks: int = 0
    seconds: float = 0.0
    packages: tuple[str, ...] = field(default_factory=tuple)


def _environment(url: str, concurrency: int) -> dict[str, str]:
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        URL_ENV: url,
        CONCURRENCY_ENV: str(concurrency),
        "PYTHONPATH": os.pathsep.join(part for part in path if part),
        "PYTHONUNBUFFERED": "1",
    }


def _measure(
    row: Row,
    client: ProcessGroup,
    worker: ProcessGroup,
    memory: PssSampler,
    output: Path,
) -> None:
    code = client.wait(SETUP_TIMEOUT)
    if code is None:
        row.status = "failed"
        row.note = f"timed out after {SETUP_TIMEOUT:.0f} s ({client.log_tail(2)})"
        return
    outcome = json.loads(output.read_text()) if output.exists() else {}
    if "error" in outcome or code != 0:
        row.status = outcome.get("status", "failed")
        row.note = outcome.get("error", f"client exited with code {code}")
        if worker.exit_code() is not None:
            row.note += f"; the worker exited: {worker.log_tail(3)}"
        return
    for name, value in outcome.items():
        setattr(row, name, value)
    row.peak_rss = worker.peak_rss_mib()
    row.peak_pss = memory.stop()


def run_setup(
    key: str, adapter: Adapter, index: int, *, url: str, work_dir: Path, sizes: Sizes
) -> Row:
    """Start the worker and the client process of one setup, and stop both."""
    setup = adapter.setups()[index]
    row = Row(
        key=key,
        system=adapter.name,
        concurrency=setup.concurrency,
        execution=setup.execution,
        batching=adapter.batching,
        settings=adapter.settings,
        packages=adapter.packages,
    )
    if setup.skip_reason is not None:
        row.status = "not supported"
        row.note = setup.skip_reason
        return row

    if adapter.max_tasks is not None and adapter.max_tasks < sizes.tasks:
        sizes = dataclasses.replace(sizes, tasks=adapter.max_tasks)
    row.tasks = sizes.tasks
    redis.Redis.from_url(url).flushall()
    env = _environment(url, setup.concurrency)
    name = f"{key}-{index}"
    output = work_dir / f"{name}.json"
    started = time.monotonic()
    worker = client = memory = None
    try:
        worker = ProcessGroup(
            adapter.worker_command(setup), env, ROOT, work_dir / f"{name}-worker.log"
        )
        worker.start()
        memory = worker.sample_pss()
        client_command = [
            sys.executable,
            "-m",
            "benchmarks.peers.client",
            key,
            str(index),
            str(output),
            *sizes.options(),
        ]
        client = ProcessGroup(
            client_command, env, ROOT, work_dir / f"{name}-client.log"
        )
        client.start()
        _measure(row, client, worker, memory, output)
    except AdapterUnavailable as exc:
        row.status = "skipped"
        row.note = str(exc)
    finally:
        if memory is not None:
            memory.stop()
        for group in (client, worker):
            if group is not None:
                group.stop()
    row.seconds = time.monotonic() - started
    return row


def choose_port() -> int:
    """Return a free loopback port other than Redis's default."""
    while True:
        port = free_port()
        if port != DEFAULT_REDIS_PORT:
            return port


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="Compare Python Redis task queues on one private redis-server.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 500 tasks, 50 round trips and 200 sleeping tasks per setup",
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"adapters to run, from: {', '.join(ADAPTERS)}",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="directory for benchmarks-peers.md and .png; by default a full run "
        "writes them to docs/ and a --quick or --only run writes none",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="directory to copy the worker, client and redis-server logs to",
    )
    arguments = parser.parse_args(argv)
    if arguments.only:
        names = [name.strip() for name in arguments.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in ADAPTERS]
        if unknown:
            known = ", ".join(ADAPTERS)
            parser.error(f"unknown adapter {', '.join(unknown)}; choose from {known}")
        arguments.only = names
    if arguments.output_dir is None and not arguments.quick and not arguments.only:
        arguments.output_dir = ROOT / "docs"
    return arguments


def copy_logs(work_dir: Path, log_dir: Path) -> None:
    """Copy every log of the run from work_dir to log_dir."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for log in work_dir.rglob("*.log"):
        shutil.copy(log, log_dir / log.name)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks that stop the processes.
    raise SystemExit(128 + signum)


def run(keys: list[str], sizes: Sizes, work_dir: Path) -> tuple[list[Row], str]:
    """Start redis-server and run each adapter's setups.

    Returns:
        The rows and the server's version.
    """
    rows: list[Row] = []
    with LocalRedisServer(work_dir / "redis", port=choose_port()) as server:
        # Adapter modules read the URL when imported, here and in the workers.
        os.environ[URL_ENV] = server.url
        version = str(redis.Redis.from_url(server.url).info("server")["redis_version"])
        print(f"redis-server {version} on {server.url}", file=sys.stderr)
        for key in keys:
            try:
                adapter = load_adapter(key)
                setups = adapter.setups()
            except AdapterUnavailable as exc:
                rows.append(Row(key=key, system=key, status="skipped", note=str(exc)))
                print(f"{key}: skipped: {exc}", file=sys.stderr)
                continue
            for index in range(len(setups)):
                row = run_setup(
                    key, adapter, index, url=server.url, work_dir=work_dir, sizes=sizes
                )
                rows.append(row)
                print(report.progress_line(row), file=sys.stderr)
    return rows, version


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and write the page and the plot."""
    arguments = parse_arguments(argv)
    keys = arguments.only or list(ADAPTERS)
    sizes = QUICK if arguments.quick else FULL
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as directory:
        try:
            rows, redis_version = run(keys, sizes, Path(directory))
        finally:
            if arguments.log_dir is not None:
                copy_logs(Path(directory), arguments.log_dir)
    elapsed = time.monotonic() - started

    print(report.markdown_table(rows))
    print(f"\nTotal run time: {elapsed:.0f} s", file=sys.stderr)
    if arguments.output_dir is None:
        return

    options = argv if argv is not None else sys.argv[1:]
    run_info = report.RunInfo(
        command=" ".join(["python -m benchmarks.peers", *options]),
        redis_version=redis_version,
        sizes=sizes,
        seconds=elapsed,
    )
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    markdown = arguments.output_dir / "benchmarks-peers.md"
    plot = arguments.output_dir / "benchmarks-peers.png"
    report.write_plot(plot, rows)
    report.write_markdown(markdown, rows, run_info, plot.name)
    print(f"Wrote {markdown} and {plot}", file=sys.stderr)
