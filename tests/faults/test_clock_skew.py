"""Fault runs with a worker whose clock is two minutes ahead or behind.

Leases are deadlines in Redis server time: the Lua scripts read TIME, and
workers never compare a lease with their own clock. A sitecustomize module
shifts time.time of one worker by CLOCK_OFFSET seconds. That worker must not
take over a live task of a worker with a correct clock. A dead worker's task
must wait for about one lease before recovery, whichever of the two died.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis
from apps import fault_tasks
from apps.fault_harness import (
    KEYS,
    MakeManager,
    report,
    run_counts,
    wait_for_workers,
    worker_pids,
)
from helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SPEC = "apps.fault_tasks:config"
CLOCK_OFFSET = 120.0
LEASE_TIMEOUT = 1.0
# Seconds each task of the live-task run takes: several leases long.
LIVE_HOLD = 2.5
# Seconds the tasks of the dead-worker run would take. Their workers are
# killed long before.
DEAD_HOLD = 20.0
# A dead worker's lease expires between lease - heartbeat interval and one
# lease after the kill, and a recovery pass runs every heartbeat interval
# (lease / 3), so recovery lands between 0.67 s and 1.33 s here.
RECOVERY_WINDOW = (0.5, 3.0)
TIMEOUT = 15.0

SITECUSTOMIZE = """\
import os
import time

_offset = float(os.environ["FAULT_CLOCK_OFFSET"])
_time = time.time
_time_ns = time.time_ns
time.time = lambda: _time() + _offset
time.time_ns = lambda: _time_ns() + int(_offset * 1e9)
"""


@pytest.fixture
def skewed_env(tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment of a worker whose time.time is off by request.param seconds."""
    directory = tmp_path / "skewed-clock"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        "FAULT_LEASE_TIMEOUT": str(LEASE_TIMEOUT),
        "FAULT_CLOCK_OFFSET": str(request.param),
        "PYTHONPATH": os.pathsep.join([str(directory), str(TESTS), str(ROOT)]),
    }


def start_one_worker(start_workers, client: redis.Redis, env: dict[str, str]):
    supervisor = start_workers(SPEC, "--workers", "1", env=env)
    wait_for_workers(client, supervisor, 1)
    return supervisor


def holder_of(client: redis.Redis, task_id: str) -> int | None:
    """Return the pid of the process that started the task first, if any."""
    members = client.smembers(fault_tasks.runs_key(task_id))
    pids = sorted(int(member.decode().split("-")[0]) for member in members)
    return pids[0] if pids else None


OFFSETS = pytest.mark.parametrize(
    "skewed_env", [CLOCK_OFFSET, -CLOCK_OFFSET], ids=["ahead", "behind"], indirect=True
)


@OFFSETS
def test_skewed_clock_steals_nothing(
    skewed_env: dict[str, str],
    start_workers,
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    offset = float(skewed_env["FAULT_CLOCK_OFFSET"])
    normal = start_one_worker(
        start_workers, redis_client, {"FAULT_LEASE_TIMEOUT": str(LEASE_TIMEOUT)}
    )
    skewed = start_one_worker(start_workers, redis_client, skewed_env)
    [normal_pid] = worker_pids(redis_client, normal.pid)
    [skewed_pid] = worker_pids(redis_client, skewed.pid)
    manager = make_manager(lease_timeout=LEASE_TIMEOUT)

    # Each worker claims one task and holds it for several leases while the
    # other worker's heartbeat thread looks for expired leases.
    futures = [manager.queue_task_async(fault_tasks.hold, LIVE_HOLD) for _ in "ab"]
    values = {}
    for future in futures:
        value = future.result(timeout=TIMEOUT)
        values[value["pid"]] = value["time"] - time.time()
    task_ids = [future.task_id for future in futures]
    runs = run_counts(redis_client, task_ids)
    report(
        f"clock skew {offset:+.0f} s, live tasks",
        runs=runs,
        skewed_worker_offset_s=round(values.get(skewed_pid, 0.0), 1),
        expired_leases=redis_client.hlen(KEYS.crashes),
    )

    assert sorted(values) == sorted([normal_pid, skewed_pid])
    assert abs(values[skewed_pid] - offset) < 5
    assert abs(values[normal_pid]) < 5
    assert runs == [1, 1]
    assert redis_client.hlen(KEYS.crashes) == 0


def seconds_until_recovered(
    client: redis.Redis, supervisor, task_id: str, recoverer: str
) -> float:
    """Kill a supervisor's process group; return seconds until its task is released.

    The recovery script counts a crash for every task it releases, so the
    task's field in the crashes hash marks the release.
    """
    supervisor.kill_group()
    killed_at = time.monotonic()
    wait_until(lambda: client.hexists(KEYS.crashes, task_id), timeout=TIMEOUT)
    elapsed = time.monotonic() - killed_at
    report(
        "clock skew, dead worker",
        recovered_by=recoverer,
        seconds_after_kill=round(elapsed, 2),
    )
    return elapsed


@OFFSETS
def test_skewed_clock_recovers_dead(
    skewed_env: dict[str, str],
    start_workers,
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    normal_env = {"FAULT_LEASE_TIMEOUT": str(LEASE_TIMEOUT)}
    normal = start_one_worker(start_workers, redis_client, normal_env)
    skewed = start_one_worker(start_workers, redis_client, skewed_env)
    [normal_pid] = worker_pids(redis_client, normal.pid)
    [skewed_pid] = worker_pids(redis_client, skewed.pid)
    manager = make_manager(lease_timeout=LEASE_TIMEOUT)
    futures = [manager.queue_task_async(fault_tasks.hold, DEAD_HOLD) for _ in "ab"]
    task_ids = [future.task_id for future in futures]
    wait_until(lambda: all(holder_of(redis_client, task_id) for task_id in task_ids))
    task_of = {holder_of(redis_client, task_id): task_id for task_id in task_ids}
    assert sorted(task_of) == sorted([normal_pid, skewed_pid])

    # The skewed worker dies without its supervisor releasing its task: the
    # worker with the correct clock must find the expired lease.
    by_normal = seconds_until_recovered(
        redis_client, skewed, task_of[skewed_pid], "normal clock"
    )
    # Then a new skewed worker must find the lease of the dead normal worker.
    start_one_worker(start_workers, redis_client, skewed_env)
    by_skewed = seconds_until_recovered(
        redis_client, normal, task_of[normal_pid], "skewed clock"
    )

    assert RECOVERY_WINDOW[0] <= by_normal <= RECOVERY_WINDOW[1]
    assert RECOVERY_WINDOW[0] <= by_skewed <= RECOVERY_WINDOW[1]
