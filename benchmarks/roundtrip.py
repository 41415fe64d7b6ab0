"""Measure tasker-redis round trips and throughput against a bare redis-py loop.

Starts a private redis-server on loopback (append-only, fsync every second),
then measures, in one run:

- the round-trip latency of queue_task for a no-op task with one worker
  process, and of a bare loop doing the Redis calls one task needs
  (LPUSH task, BRPOP task, LPUSH reply, BLPOP reply), in alternating
  blocks of calls so that both meet the same load on a shared machine;
- the throughput of no-op tasks submitted with queue_task_async, with one
  and two worker processes, with one process of eight threads, and of the
  bare loop with one worker process.

Run from the repository root: python benchmarks/roundtrip.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasker_redis import TaskManager  # noqa: E402
from tasker_redis.local_server import LocalRedisServer  # noqa: E402

BARE_QUEUE = "bench:bare:queue"
# Round trips before timing, and per block of one kind.
WARM_UP = 50
BLOCK = 200


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def bare_worker(url: str) -> None:
    """Serve the bare loop: pop a task id, push a reply, forever."""
    client = redis.Redis.from_url(url)
    while True:
        item = client.brpop([BARE_QUEUE], timeout=0)
        assert item is not None
        task_id = item[1].decode()
        if task_id == "stop":
            return
        client.lpush(f"bench:bare:reply:{task_id}", b"ok")


def start_bare_worker(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--bare-worker", url])


def bare_latency(client: redis.Redis, calls: int, first: int = 0) -> list[float]:
    samples = []
    for index in range(first, first + calls):
        started = time.perf_counter()
        client.lpush(BARE_QUEUE, f"lat{index}")
        client.blpop([f"bench:bare:reply:lat{index}"], timeout=10)
        samples.append(time.perf_counter() - started)
    return samples


def bare_throughput(client: redis.Redis, tasks: int) -> float:
    started = time.perf_counter()
    for index in range(tasks):
        client.lpush(BARE_QUEUE, f"tp{index}")
    for index in range(tasks):
        client.blpop([f"bench:bare:reply:tp{index}"], timeout=30)
    return tasks / (time.perf_counter() - started)


def start_workers(
    url: str, count: int, log: Path, threads: int = 1
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKER_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tasker_redis_cli",
                "worker",
                "benchmarks.noop_tasks:config",
                "--workers",
                str(count),
                "--threads",
                str(threads),
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )


def wait_for_workers(manager: TaskManager, count: int) -> None:
    deadline = time.monotonic() + 30
    while manager.stats().active_workers < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not start within 30 s")
        time.sleep(0.05)


def stop_workers(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=30)


def tasker_latency(manager: TaskManager, calls: int) -> list[float]:
    from benchmarks.noop_tasks import noop

    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        manager.queue_task(noop)
        samples.append(time.perf_counter() - started)
    return samples


def tasker_throughput(manager: TaskManager, tasks: int) -> float:
    from benchmarks.noop_tasks import noop

    started = time.perf_counter()
    futures = [manager.queue_task_async(noop) for _ in range(tasks)]
    for future in futures:
        future.result(timeout=120)
    return tasks / (time.perf_counter() - started)


def interleaved_latency(
    client: redis.Redis, manager: TaskManager, calls: int
) -> tuple[list[float], list[float]]:
    """Time calls round trips of each kind, in alternating blocks of BLOCK."""
    bare_latency(client, WARM_UP, first=-WARM_UP)
    tasker_latency(manager, WARM_UP)
    bare: list[float] = []
    tasker: list[float] = []
    while len(bare) < calls:
        block = min(BLOCK, calls - len(bare))
        bare.extend(bare_latency(client, block, first=len(bare)))
        tasker.extend(tasker_latency(manager, block))
    return bare, tasker


def report_latency(name: str, samples: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = (percentile(samples, q) * 1000 for q in (0.5, 0.95, 0.99))
    print(f"{name:<34} p50 {p50:6.3f} ms  p95 {p95:6.3f} ms  p99 {p99:6.3f} ms")
    return p50, p95, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=1000, help="sequential round trips of each kind"
    )
    parser.add_argument(
        "--tasks", type=int, default=10_000, help="tasks per throughput run"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="throughput runs; the median is shown"
    )
    parser.add_argument("--bare-worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker)
        return

    from benchmarks.noop_tasks import make_config

    with (
        tempfile.TemporaryDirectory() as directory,
        LocalRedisServer(directory) as server,
    ):
        os.environ["TASKER_REDIS_URL"] = server.url
        client = redis.Redis.from_url(server.url)
        print(
            f"redis-server {client.info('server')['redis_version']} on {server.url}, "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )

        log = Path(directory) / "workers.log"
        manager = TaskManager(make_config())
        bare = start_bare_worker(server.url)
        workers = start_workers(server.url, 1, log)
        try:
            wait_for_workers(manager, 1)
            bare_samples, tasker_samples = interleaved_latency(
                client, manager, args.calls
            )
        finally:
            stop_workers(workers)
        bare_p50, _, _ = report_latency("bare loop round trip", bare_samples)
        p50, _, _ = report_latency("tasker queue_task round trip", tasker_samples)
        print(f"{'  ratio to bare loop (p50)':<34} {p50 / bare_p50:6.2f}x")

        bare_rates = [bare_throughput(client, args.tasks) for _ in range(args.repeat)]
        client.lpush(BARE_QUEUE, "stop")
        bare.wait(timeout=30)
        bare_rate = statistics.median(bare_rates)
        print(f"{'bare loop throughput, 1 process':<34} {bare_rate:8.0f} tasks/s")

        # (processes, threads per process)
        for count, threads in ((1, 1), (2, 1), (1, 8)):
            workers = start_workers(server.url, count, log, threads)
            try:
                wait_for_workers(manager, count * threads)
                rates = [
                    tasker_throughput(manager, args.tasks) for _ in range(args.repeat)
                ]
                label = f"tasker throughput, {count} process(es)"
                if threads > 1:
                    label = f"tasker throughput, 1 process, {threads} threads"
                print(f"{label:<34} {statistics.median(rates):8.0f} tasks/s")
            finally:
                stop_workers(workers)
        manager.stop()


if __name__ == "__main__":
    main()
