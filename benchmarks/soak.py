"""Soak run: many no-op and failing tasks through one worker process.

Measures, on a private redis-server on loopback:

- Redis memory per queued task (used_memory before and after queueing tasks
  with no worker running);
- worker RSS and Redis used_memory after each round of tasks, to show
  whether either grows once warmed up.

Results expire after --result-ttl seconds (default 5), so Redis memory in
steady state covers the results of the last few seconds only.

Run from the repository root: python benchmarks/soak.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasker_redis import TaskFailed, TaskManager  # noqa: E402
from tasker_redis.local_server import LocalRedisServer  # noqa: E402


def rss_kib(pid: int) -> int:
    """Return the resident set size of a process in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_pid(manager: TaskManager) -> int:
    client = manager._client
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for worker_id in client.zrange(manager.keys.workers, 0, -1):
            pid = client.hget(manager.keys.worker_info(worker_id.decode()), "pid")
            if pid:
                return int(pid)
        time.sleep(0.05)
    raise RuntimeError("no worker registered within 30 s")


def used_memory(manager: TaskManager) -> int:
    return int(manager._client.info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--noop-per-round", type=int, default=20_000)
    parser.add_argument("--failing-per-round", type=int, default=2_000)
    parser.add_argument("--result-ttl", type=float, default=5.0)
    parser.add_argument("--queued-sample", type=int, default=10_000)
    args = parser.parse_args()

    from benchmarks import soak_tasks

    with (
        tempfile.TemporaryDirectory() as directory,
        LocalRedisServer(directory) as server,
    ):
        env = {
            **os.environ,
            "TASKER_REDIS_URL": server.url,
            "SOAK_RESULT_TTL": str(args.result_ttl),
            "PYTHONPATH": str(ROOT),
        }
        os.environ.update(env)
        manager = TaskManager(soak_tasks.make_config())

        before = used_memory(manager)
        sample = manager.queue_many(soak_tasks.noop, [()] * args.queued_sample)
        per_task = (used_memory(manager) - before) / args.queued_sample
        print(
            f"Redis memory per queued no-op task: {per_task:.0f} bytes "
            f"({args.queued_sample} queued)"
        )

        log = Path(directory) / "worker.log"
        with log.open("wb") as output:
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tasker_redis_cli",
                    "worker",
                    "benchmarks.soak_tasks:config",
                    "--workers",
                    "1",
                ],
                cwd=ROOT,
                env=env,
                stdout=output,
                stderr=output,
            )
        try:
            pid = worker_pid(manager)
            for future in sample:
                future.result(timeout=120)
            print(
                f"{'round':>5} {'tasks':>9} {'tasks/s':>8} {'worker RSS KiB':>15} "
                f"{'Redis used_memory KiB':>22}"
            )
            total = 0
            for round_number in range(1, args.rounds + 1):
                started = time.perf_counter()
                futures = manager.queue_many(
                    soak_tasks.noop, [()] * args.noop_per_round
                )
                failing = manager.queue_many(
                    soak_tasks.fail, [()] * args.failing_per_round
                )
                for future in futures:
                    future.result(timeout=300)
                failed = 0
                for future in failing:
                    try:
                        future.result(timeout=300)
                    except TaskFailed:
                        failed += 1
                assert failed == args.failing_per_round, failed
                count = args.noop_per_round + args.failing_per_round
                total += count
                rate = count / (time.perf_counter() - started)
                print(
                    f"{round_number:>5} {total:>9} {rate:>8.0f} {rss_kib(pid):>15} "
                    f"{used_memory(manager) // 1024:>22}"
                )
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            manager.stop()


if __name__ == "__main__":
    main()
