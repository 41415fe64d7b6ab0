"""Fault runs that restart the Redis server while tasks are queued and run.

With appendfsync always, Redis fsyncs its append-only file after every write
(redis.conf of Redis 7.0), so a restart on the same directory keeps every
task and result that it acknowledged. Workers, the producer's sender and
result listener, and blocking callers reconnect by themselves, so every task
whose enqueue succeeded must complete and every caller must get its result.

With appendfsync everysec and SIGKILL restarts the server may lose what it
acknowledged since its last fsync. That run does not fail on loss: it
measures how many acknowledged tasks and results were lost and prints it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from apps import fault_tasks
from apps.fault_harness import (
    KEYS,
    MakeManager,
    Outcomes,
    Stopwatch,
    collect_until_quiet,
    leftover_tasks,
    queue_counters,
    report,
    run_counts,
    wait_for_workers,
)
from helpers import wait_until

from tasker_redis import RedisUnavailableError, TaskFuture, TaskManager
from tasker_redis.local_server import LocalRedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS = 2000
# The producer hands CHUNK tasks to queue_task_async, waits until they are
# in Redis and pauses, so the sender thread is busy across every restart.
CHUNK = 20
CHUNK_PAUSE = 0.03
# Seconds one chunk may take to reach Redis before the producer gives up.
FLUSH_TIMEOUT = 10.0
TASK_SECONDS = 0.002
WORKERS = 3
BLOCKING_CALLERS = 2
RESTARTS = 3
RESTART_INTERVAL = 1.0
LEASE_TIMEOUT = 2.0
# Seconds the run may take after the last restart before the remaining
# futures count as lost.
FINISH_TIMEOUT = 60.0
# Seconds without a completed future, while no task is queued or in flight,
# after which the remaining futures count as lost at once.
QUIET_SECONDS = 3 * LEASE_TIMEOUT
# Seconds the blocking callers may take to return after the run.
CALLER_TIMEOUT = 10.0
# Seconds the server stays down under a blocked call: longer than redis-py's
# own three resends of the call (0.7 s at most), shorter than the 30 s a
# blocking call resends its task for.
OUTAGE_SECONDS = 2.0
# Seconds the blocked call's task runs, so that it ends during the outage.
OUTAGE_TASK_SECONDS = 1.0
OUTAGE_LEASE_TIMEOUT = 30.0
EVERYSEC_RUNS = 3


@dataclass
class Production:
    """The futures the producer created and how many of them Redis acknowledged.

    Attributes:
        futures: One future per task handed to queue_task_async, in order.
        acknowledged: The first this many futures belong to tasks that
            flush() confirmed are in Redis.
    """

    futures: list[TaskFuture] = field(default_factory=list)
    acknowledged: int = 0


@dataclass
class BlockingCalls:
    """What the blocking callers of one run sent and received.

    Attributes:
        returned: (expected value, returned value) of each call that returned.
        unavailable: Calls whose enqueue failed with RedisUnavailableError.
        errors: Other exceptions the calls raised.
    """

    returned: list[tuple[int, Any]] = field(default_factory=list)
    unavailable: int = 0
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class RunResult:
    """Everything one restart run produced."""

    production: Production
    outcomes: Outcomes
    calls: BlockingCalls
    stuck_callers: int
    seconds: float


def produce(manager: TaskManager, production: Production) -> None:
    """Queue TASKS echo tasks in chunks, and stop if a chunk is not sent in time."""
    for start in range(0, TASKS, CHUNK):
        production.futures.extend(
            manager.queue_task_async(fault_tasks.echo, number, TASK_SECONDS)
            for number in range(start, start + CHUNK)
        )
        if not manager.flush(timeout=FLUSH_TIMEOUT):
            return
        production.acknowledged = len(production.futures)
        # The pause spreads the load over the restart schedule. It waits for no state.
        time.sleep(CHUNK_PAUSE)


def call_until(
    manager: TaskManager, first: int, stop: threading.Event, calls: BlockingCalls
) -> None:
    """Call queue_task in a loop, with values from first on, until stop is set."""
    value = first
    while not stop.is_set():
        try:
            returned = manager.queue_task(fault_tasks.echo, value, TASK_SECONDS)
        except RedisUnavailableError:
            # The enqueue was not acknowledged, so nothing is owed to this call.
            with calls.lock:
                calls.unavailable += 1
            # A caller's retry pause while the server is down.
            stop.wait(0.05)
        except Exception as error:
            with calls.lock:
                calls.errors.append(error)
            return
        else:
            with calls.lock:
                calls.returned.append((value, returned))
        value += 1


def run_with_restarts(
    manager: TaskManager,
    client: redis.Redis,
    server: LocalRedisServer,
    *,
    kill: bool,
) -> RunResult:
    """Queue TASKS tasks and run blocking callers while restarting the server."""
    clock = Stopwatch()
    production = Production()
    calls = BlockingCalls()
    stop_callers = threading.Event()
    producer = threading.Thread(target=produce, args=(manager, production))
    callers = [
        threading.Thread(
            target=call_until,
            args=(manager, 1_000_000 * (index + 1), stop_callers, calls),
            daemon=True,
        )
        for index in range(BLOCKING_CALLERS)
    ]
    producer.start()
    for caller in callers:
        caller.start()

    for _ in range(RESTARTS):
        # The restart cadence is the fault schedule under test.
        time.sleep(RESTART_INTERVAL)
        server.restart(kill=kill)

    producer.join(timeout=FINISH_TIMEOUT)
    stop_callers.set()
    outcomes = collect_until_quiet(
        client, production.futures, FINISH_TIMEOUT, QUIET_SECONDS
    )

    # A caller still blocked now waits for a result that is not coming.
    deadline = time.monotonic() + CALLER_TIMEOUT
    for caller in callers:
        caller.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = sum(1 for caller in callers if caller.is_alive())
    return RunResult(production, outcomes, calls, stuck, clock.elapsed)


def start_three_workers(start_workers, client: redis.Redis, env: dict[str, str]):
    supervisor = start_workers(
        "apps.fault_tasks:config",
        "--workers",
        str(WORKERS),
        env={"FAULT_LEASE_TIMEOUT": str(LEASE_TIMEOUT), **env},
    )
    wait_for_workers(client, supervisor, WORKERS)
    return supervisor


def test_restarts_lose_no_task(
    redis_server: LocalRedisServer,
    start_workers,
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    start_three_workers(start_workers, redis_client, {})
    manager = make_manager(lease_timeout=LEASE_TIMEOUT)
    first_pid = redis_server.process.pid

    run = run_with_restarts(manager, redis_client, redis_server, kill=False)
    futures = run.production.futures
    acknowledged = run.production.acknowledged
    task_ids = [future.task_id for future in futures]
    runs = Counter(run_counts(redis_client, task_ids))
    counters = queue_counters(redis_client)
    pending_runs = run_counts(redis_client, run.outcomes.pending)
    report(
        "redis restarts, appendfsync always",
        tasks=len(futures),
        acknowledged=acknowledged,
        restarts=RESTARTS,
        blocking_calls=len(run.calls.returned),
        blocking_unavailable=run.calls.unavailable,
        stuck_callers=run.stuck_callers,
        completed=len(run.outcomes.values),
        errors=dict(run.outcomes.error_types()),
        lost=len(run.outcomes.pending),
        lost_after_running=sum(1 for count in pending_runs if count > 0),
        lost_with_stored_result=sum(
            redis_client.exists(KEYS.result(task_id))
            for task_id in run.outcomes.pending
        ),
        results_left_in_inbox=redis_client.llen(KEYS.inbox(manager.id)),
        ran_twice=sum(n for times, n in runs.items() if times >= 2),
        completed_counter=counters.get("completed"),
        seconds=round(run.seconds, 1),
    )

    assert redis_server.process.pid != first_pid
    assert acknowledged == TASKS
    assert run.outcomes.pending == []
    assert run.outcomes.errors == {}
    assert [run.outcomes.values[task_id] for task_id in task_ids] == list(range(TASKS))
    assert runs[0] == 0
    assert run.calls.errors == []
    # A blocking call resends its task for 30 s, longer than any restart here.
    assert run.calls.unavailable == 0
    assert run.stuck_callers == 0
    assert run.calls.returned != []
    for expected, returned in run.calls.returned:
        assert returned == expected
    assert counters.get("completed", 0) >= TASKS + len(run.calls.returned)
    assert leftover_tasks(redis_client) == 0


def started_task_ids(run_log: Path) -> set[str]:
    """Return the ids of every task that started, from the workers' run logs."""
    started: set[str] = set()
    for path in run_log.glob("runs-*.log"):
        started.update(path.read_text(encoding="ascii").split())
    return started


def test_blocking_call_outlasts_outage(
    redis_server: LocalRedisServer,
    start_workers,
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    # Leases outlast the outage, so the task is not handed to another worker.
    start_three_workers(
        start_workers, redis_client, {"FAULT_LEASE_TIMEOUT": str(OUTAGE_LEASE_TIMEOUT)}
    )
    manager = make_manager(lease_timeout=OUTAGE_LEASE_TIMEOUT)
    # A first call opens the connection and loads the enqueue script, so the
    # call under test waits in the wait sent with its task when Redis dies.
    assert manager.queue_task(fault_tasks.echo, 1) == 1
    redis_client.delete(*redis_client.keys(fault_tasks.runs_key("*")))
    returned: list[Any] = []
    raised: list[BaseException] = []

    def call() -> None:
        try:
            returned.append(
                manager.queue_task(fault_tasks.echo, 7, OUTAGE_TASK_SECONDS)
            )
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    wait_until(lambda: redis_client.keys(fault_tasks.runs_key("*")))
    # SIGKILL closes the connections and the listening socket at once, so
    # the call's first resend already finds the server gone.
    redis_server.stop(kill=True)
    # The outage's length is the fault under test.
    time.sleep(OUTAGE_SECONDS)
    redis_server.start()
    caller.join(timeout=CALLER_TIMEOUT + OUTAGE_SECONDS)

    assert not caller.is_alive()
    assert raised == []
    assert returned == [7]
    (runs_key,) = redis_client.keys(fault_tasks.runs_key("*"))
    assert redis_client.scard(runs_key) == 1


def measure_everysec_run(
    directory: Path, start_workers
) -> tuple[Counter[str], dict[str, Any]]:
    """Measure one run on an everysec server with SIGKILL restarts.

    Returns:
        The counts of the run, and details for the report.
    """
    run_log = directory / "run-log"
    run_log.mkdir(parents=True)
    with LocalRedisServer(directory / "redis", appendfsync="everysec") as server:
        client = redis.Redis.from_url(server.url)
        supervisor = start_three_workers(
            start_workers,
            client,
            {"FAULT_RUN_LOG": str(run_log), "TASKER_REDIS_URL": server.url},
        )
        manager = TaskManager(
            fault_tasks.make_config(server.url, lease_timeout=LEASE_TIMEOUT)
        )
        try:
            run = run_with_restarts(manager, client, server, kill=True)
        finally:
            manager.kill()
            supervisor.kill_group()
            client.close()

    started = started_task_ids(run_log)
    acknowledged = {
        future.task_id
        for future in run.production.futures[: run.production.acknowledged]
    }
    pending = run.outcomes.pending
    counts = Counter(
        tasks=len(run.production.futures),
        acknowledged=len(acknowledged),
        completed=len(run.outcomes.values),
        errors=len(run.outcomes.errors),
        tasks_lost=sum(1 for i in pending if i in acknowledged and i not in started),
        results_lost=sum(1 for i in pending if i in acknowledged and i in started),
        unacknowledged_pending=sum(1 for i in pending if i not in acknowledged),
        blocking_calls=len(run.calls.returned),
        blocking_unavailable=run.calls.unavailable,
        blocking_wrong=sum(1 for sent, got in run.calls.returned if sent != got),
        stuck_callers=run.stuck_callers,
    )
    details = {
        "error_types": dict(run.outcomes.error_types()),
        "first_error": next(iter(run.outcomes.errors.values()), None),
        "seconds": round(run.seconds, 1),
    }
    return counts, details


def test_everysec_kill_loss_window(
    tmp_path: Path, start_workers, record_property
) -> None:
    # NOTE: SIGKILL ends only the redis-server process. What it wrote to the
    # append-only file is already in the kernel's page cache, so this run
    # cannot show the loss of an operating-system crash or power cut. With
    # everysec (one fsync per second, per redis.conf) that loss is estimated
    # at the writes of about the last second.
    totals: Counter[str] = Counter()
    for index in range(EVERYSEC_RUNS):
        counts, details = measure_everysec_run(tmp_path / f"run-{index}", start_workers)
        report(
            f"redis SIGKILL restarts, appendfsync everysec, run {index + 1}",
            **counts,
            **details,
        )
        totals.update(counts)

    report(
        "redis SIGKILL restarts, appendfsync everysec, total",
        runs=EVERYSEC_RUNS,
        restarts=EVERYSEC_RUNS * RESTARTS,
        **totals,
    )
    for name, value in totals.items():
        record_property(f"everysec_{name}", value)
    accounted = (
        totals["completed"]
        + totals["errors"]
        + totals["tasks_lost"]
        + totals["results_lost"]
        + totals["unacknowledged_pending"]
    )
    assert accounted == totals["tasks"]
    assert totals["blocking_wrong"] == 0
