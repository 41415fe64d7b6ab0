"""Checksum and count every file under a directory on worker processes.

Every regular file under --path is one task, which returns the file's SHA-256
and size and, for a text file, its lines and words. A file with a NUL byte in
its first 8 KiB counts as binary and gets only the size and checksum.
Symbolic links are skipped. The script:

- starts `tasker worker examples.file_stats:config` with --workers processes,
  or with --workers 0 uses workers that already run on the queue;
- previews the first file at once with run_task, in this process;
- queues all files with queue_many, the --urgent largest at high priority;
- checks every result against its own computation over the whole file;
- prints a summary and exits with code 1 if any result differed or failed.

Run from the repository root:

    python -m examples.file_stats                    # the standard library
    python -m examples.file_stats --path ~/src --workers 4

Without --redis-url or $TASKER_REDIS_URL it starts a local Redis server that
keeps append-only data in --data-dir (.tasker-redis) and stops it at the end.
Tasks that an interrupted run left queued there run first in the next run.
Workers open the files by path, so they must see the same file system.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import stat
import sys
import sysconfig
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from examples.support import Workers, redis_server
from tasker_redis import Config, TaskContext, TaskerError, TaskError, TaskManager, task
from tasker_redis.config import REDIS_URL_ENV, mask_url

logger = logging.getLogger(__name__)

QUEUE_ENV = "FILE_STATS_QUEUE"
DEFAULT_QUEUE = "file-stats"
# A NUL byte among the first BINARY_PROBE_SIZE bytes marks a file as binary.
BINARY_PROBE_SIZE = 8192
CHUNK_SIZE = 1024 * 1024
# Mismatches and failures printed in full; the summary counts all of them.
MAX_REPORTED = 10


class FileCounter:
    """Running SHA-256, size, line and word counts over a file read in chunks.

    Words are runs of bytes other than ASCII whitespace, as bytes.split() finds
    them. Lines are newline bytes, plus one for a last line without a newline.
    """

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        self.digest = hashlib.sha256()
        self.size = 0
        self.newlines = 0
        self.words = 0
        self.last_byte = b""

    def update(self, chunk: bytes | bytearray) -> None:
        if not chunk:
            return
        self.digest.update(chunk)
        self.size += len(chunk)
        if not self.binary:
            self.newlines += chunk.count(b"\n")
            self.words += len(chunk.split())
            # A word that spans the boundary was counted in both chunks.
            in_word = self.last_byte and not self.last_byte.isspace()
            if in_word and not chunk[:1].isspace():
                self.words -= 1
        self.last_byte = bytes(chunk[-1:])

    def stats(self) -> dict[str, Any]:
        """Return the file's stats; lines and words are None for a binary file."""
        lines = words = None
        if not self.binary:
            unterminated = self.last_byte not in (b"", b"\n")
            lines = self.newlines + int(unterminated)
            words = self.words
        return {
            "sha256": self.digest.hexdigest(),
            "size": self.size,
            "binary": self.binary,
            "lines": lines,
            "words": words,
        }


class FileReader:
    """The per-worker resource: a read buffer that every task reuses.

    Attributes:
        files_read: Files this reader measured.
        bytes_read: Bytes this reader read.
    """

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.buffer = bytearray(chunk_size)
        self.files_read = 0
        self.bytes_read = 0

    def measure(self, path: str) -> dict[str, Any]:
        """Return the stats of the file at path, reading it in chunks.

        Raises:
            OSError: The file cannot be read.
        """
        with open(path, "rb") as file:
            head = file.read(BINARY_PROBE_SIZE)
            counter = FileCounter(binary=b"\0" in head)
            counter.update(head)
            while size := file.readinto(self.buffer):
                full = size == len(self.buffer)
                counter.update(self.buffer if full else self.buffer[:size])
        self.files_read += 1
        self.bytes_read += counter.size
        return counter.stats()

    def close(self) -> None:
        logger.info(
            "file reader of process %d closed (files: %d, bytes: %d)",
            os.getpid(),
            self.files_read,
            self.bytes_read,
        )


def measure_bytes(data: bytes) -> dict[str, Any]:
    """Return the same stats as FileReader.measure, computed from the whole file."""
    binary = b"\0" in data[:BINARY_PROBE_SIZE]
    lines = words = None
    if not binary:
        pieces = data.split(b"\n")
        lines = len(pieces) - int(pieces[-1] == b"")
        words = len(data.split())
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "binary": binary,
        "lines": lines,
        "words": words,
    }


# An explicit name, because this module is "__main__" when run as a script but
# "examples.file_stats" in the workers that import it.
@task(name="file_stats.measure")
def measure(ctx: TaskContext, reader: FileReader, path: str) -> dict[str, Any]:
    """Return the stats of the file at path and the id of the worker."""
    return {**reader.measure(path), "worker": ctx.worker_id}


# Workers import this module by name, so the queue and the Redis URL come from
# the environment that main() sets for them ($TASKER_REDIS_URL is read by Config).
config = Config(
    on_create=FileReader,
    on_destroy=FileReader.close,
    worker_count=2,
    queue=os.environ.get(QUEUE_ENV, DEFAULT_QUEUE),
    # The producer reads every result during its run.
    result_ttl=3600.0,
)


@dataclasses.dataclass
class Summary:
    """Totals over the checked results."""

    files: int = 0
    text_files: int = 0
    binary_files: int = 0
    total_bytes: int = 0
    lines: int = 0
    words: int = 0
    mismatches: int = 0
    failures: int = 0
    workers: set[str] = dataclasses.field(default_factory=set)

    def add(self, stats: dict[str, Any]) -> None:
        self.files += 1
        self.total_bytes += stats["size"]
        if stats["binary"]:
            self.binary_files += 1
        else:
            self.text_files += 1
            self.lines += stats["lines"]
            self.words += stats["words"]


def list_files(root: Path) -> list[tuple[str, int]]:
    """Return (path, size) of every regular file under root, sorted by path.

    Symbolic links and files that vanish while listing are skipped.
    """
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                status = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                found.append((path, status.st_size))
    return sorted(found)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.file_stats",
        description="Checksum and count every file under a directory on "
        "tasker-redis workers, and check each result locally.",
    )
    parser.add_argument(
        "--path",
        type=Path,
        default=Path(sysconfig.get_paths()["stdlib"]),
        help="directory to scan (default: the Python standard library, %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes to start; 0 uses workers already running on the "
        "queue (default: %(default)s)",
    )
    parser.add_argument(
        "--urgent",
        type=int,
        default=5,
        help="largest files queued at high priority (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(REDIS_URL_ENV) or None,
        help=f"Redis server URL (default: ${REDIS_URL_ENV}); without one, a "
        "local server is started",
    )
    parser.add_argument(
        "--queue",
        default=os.environ.get(QUEUE_ENV, DEFAULT_QUEUE),
        help=f"queue name (default: ${QUEUE_ENV} or %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".tasker-redis"),
        help="folder of the local Redis server's data and of the workers' log "
        "(default: %(default)s)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.path.is_dir():
        parser.error(f"--path {str(args.path)!r} is not a directory")
    if args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    if args.urgent < 0:
        parser.error(f"--urgent must be 0 or more, got {args.urgent}")
    return args


def check_result(
    path: str, future: concurrent.futures.Future[Any], summary: Summary
) -> None:
    """Compare one task's result with a local computation and add it to summary."""
    try:
        result = future.result()
    except TaskError as exc:
        summary.failures += 1
        if summary.failures <= MAX_REPORTED:
            print(f"failed: {path}: {exc}")
        return
    summary.workers.add(result.pop("worker"))
    try:
        expected = measure_bytes(Path(path).read_bytes())
    except OSError as exc:
        summary.failures += 1
        if summary.failures <= MAX_REPORTED:
            print(f"failed: {path}: cannot read it here: {exc}")
        return
    if result != expected:
        summary.mismatches += 1
        if summary.mismatches <= MAX_REPORTED:
            differing = sorted(
                key for key in expected if result.get(key) != expected[key]
            )
            print(f"mismatch: {path}: {', '.join(differing)} differ")
        return
    summary.add(result)


def preview(manager: TaskManager, path: str) -> None:
    """Run the task on one file in this process with run_task and print it."""
    stats = manager.run_task(measure, path)
    counts = f"size {stats['size']}, binary"
    if not stats["binary"]:
        counts = f"size {stats['size']}, lines {stats['lines']}, words {stats['words']}"
    print(f"preview (run_task): {path}: {counts}, sha256 {stats['sha256'][:16]}")


def run(manager: TaskManager, files: list[tuple[str, int]], urgent: int) -> Summary:
    """Queue one task per file, check every result and return the totals."""
    largest = sorted(files, key=lambda item: item[1], reverse=True)[:urgent]
    urgent_paths = [path for path, _ in largest]
    chosen = set(urgent_paths)
    normal_paths = [path for path, _ in files if path not in chosen]

    started = time.perf_counter()
    normal_futures = manager.queue_many(measure, [(path,) for path in normal_paths])
    urgent_futures = manager.queue_many(
        measure, [(path,) for path in urgent_paths], high_priority=True
    )
    print(
        f"queued {len(files)} files, the {len(urgent_paths)} largest at high priority"
    )

    if urgent_futures:
        concurrent.futures.wait(urgent_futures)
        pending = sum(not future.done() for future in normal_futures)
        print(
            f"high priority: {len(urgent_futures)} largest files done in "
            f"{time.perf_counter() - started:.2f} s, with {pending} of "
            f"{len(normal_futures)} normal tasks pending"
        )

    paths: dict[concurrent.futures.Future[Any], str] = dict(
        zip(normal_futures, normal_paths, strict=True)
    )
    paths.update(zip(urgent_futures, urgent_paths, strict=True))
    summary = Summary()
    for future in concurrent.futures.as_completed(paths):
        check_result(paths[future], future, summary)
    print_summary(summary, len(files), time.perf_counter() - started)
    return summary


def print_summary(summary: Summary, queued: int, seconds: float) -> None:
    print(f"files: {summary.files} of {queued}")
    print(f"text files: {summary.text_files}")
    print(f"binary files: {summary.binary_files}")
    print(f"bytes: {summary.total_bytes}")
    print(f"lines: {summary.lines}")
    print(f"words: {summary.words}")
    print(f"mismatches: {summary.mismatches}")
    print(f"failures: {summary.failures}")
    print(f"wall time: {seconds:.2f} s (from queueing to the last checked result)")
    print(f"tasks/s: {queued / seconds:.0f}")
    print(f"workers that ran tasks: {len(summary.workers)}")


def start_workers(
    args: argparse.Namespace, redis_url: str, stack: ExitStack
) -> Workers:
    """Start `tasker worker` for this job; stack stops it with SIGTERM on exit."""
    log_path = args.data_dir / "workers.log"
    workers = Workers(
        "examples.file_stats:config",
        count=args.workers,
        env={REDIS_URL_ENV: redis_url, QUEUE_ENV: args.queue},
        log_path=log_path,
    )
    stack.enter_context(workers)
    print(f"workers: started {args.workers}, log in {log_path}")
    return workers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = list_files(args.path)
    print(f"found {len(files)} files under {args.path}")

    with redis_server(args.redis_url, args.data_dir) as redis_url, ExitStack() as stack:
        if args.redis_url:
            print(f"redis: {mask_url(redis_url)}")
        else:
            print(f"redis: local server {redis_url}, data in {args.data_dir}")
        workers = None
        if args.workers:
            workers = start_workers(args, redis_url, stack)
        job_config = dataclasses.replace(config, redis_url=redis_url, queue=args.queue)
        manager = stack.enter_context(TaskManager(job_config))
        if workers is not None:
            workers.wait_until_running(manager)

        if files:
            preview(manager, files[0][0])
        summary = run(manager, files, args.urgent)
    return 1 if summary.mismatches or summary.failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TaskerError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
