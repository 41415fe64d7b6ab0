"""Fault run with a hung worker: SIGSTOP in the middle of a task, past its lease.

The other worker recovers the task once the lease expires and runs it again.
After SIGCONT the stopped worker finishes its copy, but its claim is stale,
so the finish script rejects the late result: the caller receives the result
of the second run and the queue counts one completion. The stopped process
is still alive, so its supervisor neither replaces it nor releases its tasks.
"""

from __future__ import annotations

import signal
import time

import pytest
import redis
from apps import fault_tasks
from apps.fault_harness import (
    KEYS,
    MakeManager,
    queue_counters,
    report,
    signal_worker,
    wait_for_workers,
    worker_pids,
)
from helpers import wait_until

from tasker_redis.serialization import TaskResult

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE_TIMEOUT = 1.0
# Seconds the task sleeps: long enough to stop its worker in the middle.
HOLD_SECONDS = 1.0
TIMEOUT = 15.0


def run_pids(client: redis.Redis, task_id: str) -> list[int]:
    """Return the pids of the processes that started the task, one per run."""
    members = client.smembers(fault_tasks.runs_key(task_id))
    return sorted(int(member.decode().split("-")[0]) for member in members)


def test_late_result_rejected(
    start_workers, make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    supervisor = start_workers(
        "apps.fault_tasks:config",
        "--workers",
        "2",
        env={"FAULT_LEASE_TIMEOUT": str(LEASE_TIMEOUT)},
    )
    wait_for_workers(redis_client, supervisor, 2)
    manager = make_manager(lease_timeout=LEASE_TIMEOUT)

    future = manager.queue_task_async(fault_tasks.hold, HOLD_SECONDS)
    wait_until(lambda: run_pids(redis_client, future.task_id))
    [stopped_pid] = run_pids(redis_client, future.task_id)
    assert signal_worker(stopped_pid, supervisor.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        value = future.result(timeout=TIMEOUT)
        stopped_seconds = time.monotonic() - stopped_at
    finally:
        assert signal_worker(stopped_pid, supervisor.pid, signal.SIGCONT)

    rejection = f"task {future.task_id}: result rejected because the lease expired"
    wait_until(lambda: rejection in supervisor.log(), timeout=TIMEOUT)
    pids = run_pids(redis_client, future.task_id)
    counters = queue_counters(redis_client)
    stored = [
        TaskResult.decode(data)
        for data in redis_client.lrange(KEYS.result(future.task_id), 0, -1)
    ]
    report(
        "hung worker",
        lease_s=LEASE_TIMEOUT,
        stopped_s=round(stopped_seconds, 2),
        runs=len(pids),
        completed_counter=counters.get("completed"),
        result_from_stopped_worker=value["pid"] == stopped_pid,
    )

    assert stopped_seconds > LEASE_TIMEOUT
    assert len(pids) == 2
    assert value["pid"] != stopped_pid
    assert value["pid"] in pids
    assert counters.get("completed") == 1
    assert len(stored) == 1
    assert stored[0].value["pid"] == value["pid"]
    assert manager.result(future.task_id, timeout=TIMEOUT)["pid"] == value["pid"]
    assert redis_client.llen(KEYS.inbox(manager.id)) == 0
    # The supervisor did not restart the stopped worker: it was alive all along.
    assert stopped_pid in worker_pids(redis_client, supervisor.pid)
