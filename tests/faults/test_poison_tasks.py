"""Fault runs with poison tasks: tasks that kill their worker process every run.

With max_crashes=2 a poison task is delivered again twice after it killed its
worker, so it runs three times; the third crash moves it to the dead-letter
list and its caller gets TaskDeadLettered. Ordinary tasks queued around the
poison tasks never crash anything, so they must all complete.
"""

from __future__ import annotations

import pytest
import redis
from apps import fault_tasks
from apps.fault_harness import (
    KEYS,
    MakeManager,
    Stopwatch,
    collect,
    queue_counters,
    report,
    run_counts,
)

from tasker_redis import Task, TaskDeadLettered
from tasker_redis.serialization import DeadLetter, TaskMessage

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_CRASHES = 2
POISON_TASKS = 3
WORKERS = 2
# Ordinary tasks queued before each poison task and after the last one.
OTHERS_PER_GAP = 100
TIMEOUT = 30.0


@pytest.mark.parametrize(
    "poison",
    [
        fault_tasks.exit_worker,
        fault_tasks.exit_worker_cleanly,
        fault_tasks.exit_worker_with_startup_code,
        fault_tasks.raise_system_exit,
        fault_tasks.segfault_worker,
    ],
    ids=["exit", "exit-0", "exit-3", "system-exit", "sigsegv"],
)
def test_poison_dead_lettered(
    poison: Task[None],
    start_workers,
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    manager = make_manager(max_crashes=MAX_CRASHES)
    others = []
    poisoned = []
    for gap in range(POISON_TASKS + 1):
        if gap > 0:
            poisoned.append(manager.queue_task_async(poison))
        start = gap * OTHERS_PER_GAP
        others += [
            manager.queue_task_async(fault_tasks.echo, n)
            for n in range(start, start + OTHERS_PER_GAP)
        ]
    # Every task is queued before the workers start, so the order in which
    # they claim them does not depend on the sender's timing.
    assert manager.flush(timeout=TIMEOUT)
    clock = Stopwatch()
    start_workers(
        "apps.fault_tasks:config",
        "--workers",
        str(WORKERS),
        env={"FAULT_MAX_CRASHES": str(MAX_CRASHES)},
    )

    poison_outcomes = collect(poisoned, timeout=TIMEOUT)
    outcomes = collect(others, timeout=TIMEOUT)
    poison_ids = [future.task_id for future in poisoned]
    other_ids = [future.task_id for future in others]
    poison_runs = run_counts(redis_client, poison_ids)
    other_runs = run_counts(redis_client, other_ids)
    entries = {
        entry.task_id: entry
        for entry in map(DeadLetter.decode, redis_client.lrange(KEYS.dead, 0, -1))
    }
    counters = queue_counters(redis_client)
    report(
        f"poison tasks {poison.name}",
        poison_tasks=POISON_TASKS,
        poison_runs=poison_runs,
        poison_errors=dict(poison_outcomes.error_types()),
        others=len(others),
        others_completed=len(outcomes.values),
        others_errors=dict(outcomes.error_types()),
        others_lost=len(outcomes.pending),
        others_ran_twice=sum(1 for count in other_runs if count >= 2),
        dead_letters=len(entries),
        seconds=round(clock.elapsed, 1),
    )

    assert poison_outcomes.pending == []
    assert poison_outcomes.values == {}
    for future in poisoned:
        error = poison_outcomes.errors[future.task_id]
        assert isinstance(error, TaskDeadLettered)
        assert error.task_id == future.task_id
    assert poison_runs == [MAX_CRASHES + 1] * POISON_TASKS
    assert outcomes.pending == []
    assert outcomes.errors == {}
    assert [outcomes.values[task_id] for task_id in other_ids] == list(
        range(len(others))
    )
    assert sorted(entries) == sorted(poison_ids)
    for task_id in poison_ids:
        reason = entries[task_id].reason
        assert f"crashed its worker {MAX_CRASHES + 1} times" in reason
        assert f"max_crashes ({MAX_CRASHES})" in reason
        assert TaskMessage.decode(entries[task_id].message).name == poison.name
    assert counters.get("dead_lettered") == POISON_TASKS
    assert counters.get("completed") == len(others)


def test_poison_spares_batch_mates(
    start_workers, make_manager: MakeManager, redis_client: redis.Redis
) -> None:
    # With max_crashes=0 the first crash dead-letters the task that caused
    # it. A worker claims as many short tasks per round trip as it expects to
    # run in 5 ms, so the poison task shares its claim with noop tasks that
    # must not be blamed.
    # NOTE: a worker whose noop tasks average more than 2.5 ms, as on a
    # heavily loaded machine, claims one task at a time and this passes.
    manager = make_manager(max_crashes=0)
    before = [manager.queue_task_async(fault_tasks.noop, n) for n in range(50)]
    poisoned = manager.queue_task_async(fault_tasks.exit_worker)
    after = [manager.queue_task_async(fault_tasks.noop, n) for n in range(50, 100)]
    assert manager.flush(timeout=TIMEOUT)
    start_workers(
        "apps.fault_tasks:config", "--workers", "1", env={"FAULT_MAX_CRASHES": "0"}
    )

    poison_outcome = collect([poisoned], timeout=TIMEOUT)
    outcomes = collect(before + after, timeout=TIMEOUT)
    dead_ids = [
        DeadLetter.decode(data).task_id
        for data in redis_client.lrange(KEYS.dead, 0, -1)
    ]
    report(
        "poison task with max_crashes=0",
        others_completed=len(outcomes.values),
        others_errors=dict(outcomes.error_types()),
        others_lost=len(outcomes.pending),
        dead_letters=len(dead_ids),
    )

    assert isinstance(poison_outcome.errors.get(poisoned.task_id), TaskDeadLettered)
    assert run_counts(redis_client, [poisoned.task_id]) == [1]
    assert outcomes.pending == []
    assert outcomes.errors == {}
    assert dead_ids == [poisoned.task_id]
