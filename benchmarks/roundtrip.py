"""Measure tasker-redis round trips and throughput against a bare redis-py loop.

Starts a private redis-server on loopback (append-only, fsync every second),
then measures, in one run:

- the round-trip latency of queue_task for a no-op task with one worker
  process, and of a bare loop doing the Redis calls one task needs
  (LPUSH task, BRPOP task, LPUSH reply, BLPOP reply);
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


def bare_latency(client: redis.Redis, calls: int) -> list[float]:
    samples = []
    for index in range(calls):
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

    for _ in range(50):
        manager.queue_task(noop)
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


def report_latency(name: str, samples: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = (percentile(samples, q) * 1000 for q in (0.5, 0.95, 0.99))
    print(f"{name:<34} p50 {p50:6.3f} ms  p95 {p95:6.3f} ms  p99 {p99:6.3f} ms")
    return p50, p95, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="sequential round trips")
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

        bare = start_bare_worker(server.url)
        bare_latency(client, 50)
        bare_p50, _, _ = report_latency(
            "bare loop round trip", bare_latency(client, args.calls)
        )
        bare_rates = [bare_throughput(client, args.tasks) for _ in range(args.repeat)]
        client.lpush(BARE_QUEUE, "stop")
        bare.wait(timeout=30)
        bare_rate = statistics.median(bare_rates)
        print(f"{'bare loop throughput, 1 process':<34} {bare_rate:8.0f} tasks/s")

        log = Path(directory) / "workers.log"
        manager = TaskManager(make_config())
        # (processes, threads per process)
        for count, threads in ((1, 1), (2, 1), (1, 8)):
            workers = start_workers(server.url, count, log, threads)
            try:
                wait_for_workers(manager, count * threads)
                if (count, threads) == (1, 1):
                    p50, _, _ = report_latency(
                        "tasker queue_task round trip",
                        tasker_latency(manager, args.calls),
                    )
                    print(f"{'  ratio to bare loop (p50)':<34} {p50 / bare_p50:6.2f}x")
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
