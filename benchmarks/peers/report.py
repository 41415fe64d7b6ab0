"""The results table on stdout, the Markdown page and the PNG plot."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.peers.harness import Row, Sizes

# A page that contains this line keeps everything below it when rewritten,
# so an analysis written by hand survives a new run.
KEEP_MARKER = "<!-- Text below this line is written by hand; the harness keeps it. -->"

TASKER = "tasker-redis"
NO_FIGURE = "-"


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run that the page lists besides the figures."""

    command: str
    redis_version: str
    sizes: Sizes
    seconds: float


def _rate(value: float | None) -> str:
    return NO_FIGURE if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return NO_FIGURE if value is None else f"{value:.2f}"


def _mib(value: float | None) -> str:
    return NO_FIGURE if value is None else f"{value:.0f}"


def _latencies(values: Sequence[float] | None) -> str:
    if values is None:
        return NO_FIGURE
    return " / ".join(f"{value:.2f}" for value in values)


def _setup(row: Row) -> str:
    if row.concurrency is None:
        return NO_FIGURE
    return f"{row.concurrency}: {row.execution}"


def _fewer(row: Row, full_count: int) -> str:
    return f" ({row.tasks:,} tasks)" if row.tasks < full_count else ""


def progress_line(row: Row) -> str:
    """Return one line about a finished setup, for stderr."""
    head = f"{row.system} [{_setup(row)}]"
    if row.status != "ok":
        return f"{head}: {row.status}: {row.note}"
    return (
        f"{head}: {_rate(row.throughput)} tasks/s, p50 "
        f"{_ms(row.latency[0] if row.latency else None)} ms, peak RSS "
        f"{_mib(row.peak_rss)} MiB, peak PSS {_mib(row.peak_pss)} MiB, "
        f"{row.seconds:.0f} s"
    )


def markdown_table(rows: list[Row]) -> str:
    """Return the results as a Markdown table, one line per setup."""
    lines = [
        "| System | Concurrency: worker | Batched enqueue | Enqueue (tasks/s) "
        "| Throughput (tasks/s) | Round trip p50 / p95 / p99 (ms) "
        "| 1 KB throughput (tasks/s) | 1 KB round trip p50 / p95 / p99 (ms) "
        "| 10 ms sleep throughput (tasks/s) | Worker peak RSS (MiB) "
        "| Worker peak PSS (MiB) |",
        "|" + " --- |" * 11,
    ]
    full_count = max((row.tasks for row in rows), default=0)
    for row in rows:
        if row.status != "ok":
            cells = [
                row.system,
                _setup(row),
                NO_FIGURE,
                *[row.status] + [NO_FIGURE] * 7,
            ]
        else:
            cells = [
                row.system,
                _setup(row),
                "yes" if row.batching else "no",
                _rate(row.enqueue_rate) + _fewer(row, full_count),
                _rate(row.throughput) + _fewer(row, full_count),
                _latencies(row.latency),
                _rate(row.payload_throughput) + _fewer(row, full_count),
                _latencies(row.payload_latency),
                _rate(row.sleep_throughput),
                _mib(row.peak_rss),
                _mib(row.peak_pss),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return NO_FIGURE
    return f"{numerator / denominator:.2f}"


def ratio_table(rows: list[Row]) -> str:
    """Return tasker-redis's figures divided by each peer's, as a Markdown table.

    A peer's concurrency 1 setup is compared with tasker-redis in 1 process,
    and its concurrency 8 setup with tasker-redis in 1 process of 8 threads.
    """
    measured = [row for row in rows if row.status == "ok"]
    tasker = {row.execution: row for row in measured if row.system == TASKER}
    lines = [
        "| Peer | Peer setup | tasker-redis setup | Throughput ratio "
        "| p50 ratio | 1 KB throughput ratio | 1 KB p50 ratio "
        "| 10 ms sleep throughput ratio | Peak RSS ratio | Peak PSS ratio |",
        "|" + " --- |" * 10,
    ]
    for row in measured:
        if row.system == TASKER:
            continue
        own = tasker.get(
            "1 process"
            if row.concurrency == 1
            else "1 process, 8 threads (--threads 8)"
        )
        if own is None:
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    row.system,
                    _setup(row),
                    _setup(own),
                    _ratio(own.throughput, row.throughput),
                    _ratio(
                        own.latency[0] if own.latency else None,
                        row.latency[0] if row.latency else None,
                    ),
                    _ratio(own.payload_throughput, row.payload_throughput),
                    _ratio(
                        own.payload_latency[0] if own.payload_latency else None,
                        row.payload_latency[0] if row.payload_latency else None,
                    ),
                    _ratio(own.sleep_throughput, row.sleep_throughput),
                    _ratio(own.peak_rss, row.peak_rss),
                    _ratio(own.peak_pss, row.peak_pss),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _source_revision() -> str:
    """Return the commit of the working tree, noting uncommitted library changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "tasker_redis",
                "cli",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if changes:
        return f"commit {commit} with uncommitted changes in tasker_redis/ or cli/"
    return f"commit {commit}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_lines(rows: list[Row], info: RunInfo) -> list[str]:
    """Return Markdown list items about the machine, the versions and the run."""
    packages: list[str] = []
    for row in rows:
        for package in row.packages:
            if package not in packages:
                packages.append(package)
    versions = ", ".join(f"{package} {_version(package)}" for package in packages)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- Date: {today}",
        f"- Command: `{info.command}`, from the repository root",
        f"- Run time: {info.seconds:.0f} s",
        f"- CPU: {os.cpu_count()} CPUs, {_cpu_model()}; memory {_memory_gib()}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, redis-server {info.redis_version}",
        f"- tasker-redis source: {_source_revision()}",
        f"- Packages: {versions}",
    ]


def _setups_without_figures(rows: list[Row]) -> list[str]:
    return [
        f"- {row.system} [{_setup(row)}]: {row.status}: {row.note}"
        for row in rows
        if row.status != "ok"
    ]


def _settings(rows: list[Row]) -> list[str]:
    lines = []
    seen = set()
    full_count = max((row.tasks for row in rows), default=0)
    for row in rows:
        if row.system in seen or row.concurrency is None:
            continue
        seen.add(row.system)
        batching = f"batched ({row.batching})" if row.batching else "one call per task"
        parts = [f"enqueue {batching}"]
        if row.settings:
            parts.append(row.settings)
        if 0 < row.tasks < full_count:
            parts.append(f"throughput runs use {row.tasks:,} tasks")
        lines.append(f"- {row.system}: {'; '.join(parts)}")
    return lines


def write_markdown(path: Path, rows: list[Row], info: RunInfo, plot_name: str) -> None:
    """Write the page, keeping any hand-written part of the existing one."""
    hand_written = ""
    if path.exists():
        old = path.read_text()
        if KEEP_MARKER in old:
            hand_written = old.split(KEEP_MARKER, 1)[1]
    template = (Path(__file__).parent / "page.md").read_text()
    page = template.format(
        tasks=f"{info.sizes.tasks:,}",
        round_trips=f"{info.sizes.round_trips:,}",
        warmup=f"{info.sizes.warmup:,}",
        sleep_tasks=f"{info.sizes.sleep_tasks:,}",
        machine="\n".join(machine_lines(rows, info)),
        table=markdown_table(rows),
        ratios=ratio_table(rows),
        without="\n".join(_setups_without_figures(rows)) or "- none",
        settings="\n".join(_settings(rows)),
        plot=plot_name,
        marker=KEEP_MARKER,
    )
    path.write_text(
        page.rstrip("\n") + "\n\n" + hand_written.lstrip("\n") if hand_written else page
    )


def write_plot(path: Path, rows: list[Row]) -> None:
    """Save a PNG with no-op throughput and p50 round trip per measured setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if row.status == "ok" and row.latency]
    labels = [f"{row.system} [{_setup(row)}]" for row in measured]
    colors = ["tab:blue" if row.concurrency == 1 else "tab:orange" for row in measured]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 0.42 * len(measured) + 1.8), sharey=True
    )
    positions = range(len(measured))
    left.barh(positions, [row.throughput or 0 for row in measured], color=colors)
    left.set_xscale("log")
    left.set_xlabel("no-op throughput, tasks/s (log scale, higher is better)")
    right.barh(
        positions, [row.latency[0] for row in measured if row.latency], color=colors
    )
    right.set_xscale("log")
    right.set_xlabel("no-op round trip p50, ms (log scale, lower is better)")
    left.set_yticks(list(positions), labels)
    left.invert_yaxis()
    for axis, values, text in (
        (left, [row.throughput or 0 for row in measured], "{:,.0f}"),
        (right, [row.latency[0] for row in measured if row.latency], "{:.2f}"),
    ):
        for position, value in zip(positions, values, strict=True):
            axis.text(
                value, position, " " + text.format(value), va="center", fontsize=8
            )
        # Leave room on the log scale for the label of the longest bar.
        axis.set_xlim(right=max(values, default=1) * 4)
        axis.grid(axis="x", which="both", alpha=0.3)
    figure.suptitle(
        "Redis task queues, concurrency 1 (blue) and 8 (orange); "
        "one run on a shared machine"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
