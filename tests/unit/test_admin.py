"""QueueAdmin in admin.py and its Lua scripts, run on fakeredis."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from tasker_redis import SerializationError, TaskerError, admin
from tasker_redis import serialization as ser
from tasker_redis.admin import (
    CannotRetry,
    DeadLetterEntry,
    DeadLetterNotFound,
    QueueAdmin,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.scripts import DEAD_LETTERED, FinishedTask, QueueScripts

LEASE_MS = 10_000
RESULT_TTL_MS = 60_000
MAX_SIZE = 1 << 20
REASON = "task 'calc.multiply' is not registered"
UNDECODABLE_MESSAGE = b"\xc1 not msgpack"


@pytest.fixture
def queue_admin(client: redis.Redis, keys: QueueKeys) -> QueueAdmin:
    """A QueueAdmin of queue "q" on the fake server."""
    return QueueAdmin(client, keys)


def make_message(
    task_id: str,
    name: str = "calc.multiply",
    args: tuple[object, ...] = (6, 7),
    *,
    priority: bool = False,
    once: bool = False,
) -> bytes:
    message = ser.TaskMessage(
        task_id=task_id,
        name=name,
        args=args,
        priority=priority,
        once=once,
        enqueued_at=1_700_000_000.0,
    )
    return message.encode(MAX_SIZE)


def dead_letter(
    queue_scripts: QueueScripts,
    task_id: str,
    message: bytes | None = None,
    *,
    priority: bool = False,
    once: bool = False,
) -> bytes:
    """Queue, claim and dead-letter a task as a worker does; return the entry."""
    data = message if message is not None else make_message(task_id, priority=priority)
    queue_scripts.enqueue([(task_id, data)], high_priority=priority, once=once)
    (claimed,) = queue_scripts.claim("w1", LEASE_MS, 1)
    entry = ser.DeadLetter(task_id, REASON, data, "w1", failed_at=1_700_000_001.0)
    result = ser.TaskResult(
        task_id, ok=False, error_kind=ser.DEAD_LETTERED, error_message=REASON
    )
    recorded, _ = queue_scripts.finish(
        [
            FinishedTask(
                task_id,
                claimed.claim,
                result.encode(MAX_SIZE),
                DEAD_LETTERED,
                dead_letter=entry.encode(),
            )
        ],
        worker_id="w1",
        lease_ms=LEASE_MS,
        result_ttl_ms=RESULT_TTL_MS,
        claim_next=0,
    )
    assert recorded == [True]
    return entry.encode()


def register_worker(
    client: redis.Redis,
    queue_scripts: QueueScripts,
    worker_id: str,
    *,
    current_task: str = "",
    started_at: float | None = None,
) -> None:
    """Write a worker's info hash and heartbeat as Worker._register does."""
    client.hset(
        queue_scripts.keys.worker_info(worker_id),
        mapping={
            "host": "box",
            "pid": 4242,
            "queue": "q",
            "started_at": time.time() - 60 if started_at is None else started_at,
        },
    )
    queue_scripts.heartbeat(
        worker_id,
        lease_ms=LEASE_MS,
        info_ttl_ms=LEASE_MS * 3,
        current_task=current_task,
        leases=[],
    )


# Queue state


def test_counts_reads_depths(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    queue_scripts.enqueue(
        [("a", make_message("a")), ("b", make_message("b"))],
        high_priority=False,
        once=False,
    )
    queue_scripts.enqueue([("c", make_message("c"))], high_priority=True, once=False)

    counts = queue_admin.counts()

    assert counts.normal == 2
    assert counts.high == 1
    assert counts.in_flight == 0


def test_workers_lists_live_worker(
    queue_admin: QueueAdmin, client: redis.Redis, queue_scripts: QueueScripts
) -> None:
    register_worker(client, queue_scripts, "w1")

    (worker,) = queue_admin.workers()

    assert worker.worker_id == "w1"
    assert worker.host == "box"
    assert worker.pid == 4242
    assert worker.current_task == ""
    assert worker.heartbeat_age < 5
    assert worker.uptime is not None
    assert 55 < worker.uptime < 120


def test_workers_skips_silent_worker(
    queue_admin: QueueAdmin, client: redis.Redis, keys: QueueKeys
) -> None:
    seconds, _ = client.time()
    client.zadd(keys.workers, {"gone": (seconds - 60) * 1000})

    assert queue_admin.workers() == []


def test_workers_sorted_by_id(
    queue_admin: QueueAdmin, client: redis.Redis, queue_scripts: QueueScripts
) -> None:
    for worker_id in ("w3", "w1", "w2"):
        register_worker(client, queue_scripts, worker_id)

    ids = [worker.worker_id for worker in queue_admin.workers()]

    assert ids == ["w1", "w2", "w3"]


def test_workers_missing_info_fields(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    queue_scripts.heartbeat(
        "bare", lease_ms=LEASE_MS, info_ttl_ms=LEASE_MS, current_task="", leases=[]
    )

    (worker,) = queue_admin.workers()

    assert worker.host == ""
    assert worker.pid is None
    assert worker.uptime is None


def test_current_task_from_claims(
    queue_admin: QueueAdmin, client: redis.Redis, queue_scripts: QueueScripts
) -> None:
    # The heartbeat ran before the claim, so the info hash reports no task.
    register_worker(client, queue_scripts, "w1")
    queue_scripts.enqueue(
        [("t1", make_message("t1", "calc.add"))], high_priority=False, once=False
    )
    queue_scripts.claim("w1", LEASE_MS, 1)

    (worker,) = queue_admin.workers()

    assert worker.current_task == "t1"
    assert worker.current_task_name == "calc.add"


def test_current_task_prefers_reported(
    queue_admin: QueueAdmin, client: redis.Redis, queue_scripts: QueueScripts
) -> None:
    queue_scripts.enqueue(
        [("t1", make_message("t1")), ("t2", make_message("t2"))],
        high_priority=False,
        once=False,
    )
    queue_scripts.claim("w1", LEASE_MS, 2)
    register_worker(client, queue_scripts, "w1", current_task="t2")

    (worker,) = queue_admin.workers()

    assert worker.current_task == "t2"


def test_current_task_finished_is_idle(
    queue_admin: QueueAdmin, client: redis.Redis, queue_scripts: QueueScripts
) -> None:
    dead_letter(queue_scripts, "t1")
    # The last heartbeat still names t1, which has finished since.
    register_worker(client, queue_scripts, "w1", current_task="t1")

    (worker,) = queue_admin.workers()

    assert worker.current_task == ""
    assert worker.current_task_name == ""


def test_current_task_name_undecodable(
    queue_admin: QueueAdmin, client: redis.Redis, queue_scripts: QueueScripts
) -> None:
    queue_scripts.enqueue(
        [("t1", UNDECODABLE_MESSAGE)], high_priority=False, once=False
    )
    queue_scripts.claim("w1", LEASE_MS, 1)
    register_worker(client, queue_scripts, "w1", current_task="t1")

    (worker,) = queue_admin.workers()

    assert worker.current_task == "t1"
    assert worker.current_task_name == ""


# Reading dead letters


def test_entry_decodes_message() -> None:
    raw = ser.DeadLetter("t1", REASON, make_message("t1"), "w1").encode()

    entry = DeadLetterEntry.decode(raw)

    assert entry.task_id == "t1"
    assert entry.task_name == "calc.multiply"
    assert entry.message is not None
    assert entry.message.args == (6, 7)
    assert entry.error == ""
    assert entry.raw == raw


def test_entry_undecodable_message() -> None:
    raw = ser.DeadLetter("t1", REASON, UNDECODABLE_MESSAGE, "w1").encode()

    entry = DeadLetterEntry.decode(raw)

    assert entry.task_id == "t1"
    assert entry.message is None
    assert entry.task_name == ""
    assert entry.error.startswith("its message does not decode")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xc1", id="not-msgpack"),
        pytest.param(ser.pack_value([1, 2]), id="list"),
        pytest.param(ser.pack_value({"id": "t1"}), id="missing-fields"),
    ],
)
def test_entry_undecodable(raw: bytes) -> None:
    entry = DeadLetterEntry.decode(raw)

    assert entry.letter is None
    assert entry.task_id == ""
    assert entry.error.startswith("the entry does not decode")


def test_dead_letters_newest_first(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    for task_id in ("t1", "t2", "t3"):
        dead_letter(queue_scripts, task_id)

    ids = [entry.task_id for entry in queue_admin.dead_letters()]

    assert ids == ["t3", "t2", "t1"]


@pytest.mark.parametrize(
    ("limit", "expected"), [(0, []), (1, ["t3"]), (5, ["t3", "t2", "t1"])]
)
def test_dead_letters_limit(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    limit: int,
    expected: list[str],
) -> None:
    for task_id in ("t1", "t2", "t3"):
        dead_letter(queue_scripts, task_id)

    ids = [entry.task_id for entry in queue_admin.dead_letters(limit)]

    assert ids == expected


def test_dead_letter_finds_by_id(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    dead_letter(queue_scripts, "t1")
    dead_letter(queue_scripts, "t2")

    entry = queue_admin.dead_letter("t1")

    assert entry.letter is not None
    assert entry.letter.reason == REASON
    assert entry.letter.worker_id == "w1"
    assert entry.letter.failed_at == 1_700_000_001.0


def test_dead_letter_missing_raises(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    dead_letter(queue_scripts, "t1")

    with pytest.raises(
        DeadLetterNotFound,
        match="no dead-letter entry with task id 'nope' in queue 'q'",
    ):
        queue_admin.dead_letter("nope")


# Retrying dead letters


def test_retry_requeues_message(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    message = make_message("t1")
    dead_letter(queue_scripts, "t1", message)
    assert client.exists(keys.result("t1")) == 1

    entry = queue_admin.retry_dead_letter("t1")

    assert entry.task_id == "t1"
    assert client.llen(keys.dead) == 0
    assert client.hget(keys.tasks, "t1") == message
    assert client.lrange(keys.normal, 0, -1) == [b"t1"]
    assert client.llen(keys.high) == 0
    assert client.llen(keys.wake) == 1
    assert client.exists(keys.result("t1")) == 0
    assert client.sismember(keys.once, "t1") == 0


def test_retried_task_claims_fresh(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    message = make_message("t1")
    dead_letter(queue_scripts, "t1", message)
    queue_admin.retry_dead_letter("t1")

    (claimed,) = queue_scripts.claim("w2", LEASE_MS, 1)

    assert claimed.task_id == "t1"
    assert claimed.message == message
    assert claimed.retries == 0
    assert claimed.crashes == 0
    assert claimed.high_priority is False


def test_retry_keeps_high_priority(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    dead_letter(queue_scripts, "t1", priority=True)

    queue_admin.retry_dead_letter("t1")

    assert client.lrange(keys.high, 0, -1) == [b"t1"]
    assert client.llen(keys.normal) == 0


def test_retry_keeps_once(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    message = make_message("t1", once=True)
    dead_letter(queue_scripts, "t1", message, once=True)
    assert client.sismember(keys.once, "t1") == 0

    queue_admin.retry_dead_letter("t1")

    assert client.sismember(keys.once, "t1") == 1


def test_retry_twice_queues_once(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    dead_letter(queue_scripts, "t1")
    queue_admin.retry_dead_letter("t1")

    with pytest.raises(DeadLetterNotFound):
        queue_admin.retry_dead_letter("t1")

    assert client.llen(keys.normal) == 1


def test_retry_race_reports_gone(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead_letter(queue_scripts, "t1")
    stale = queue_admin.dead_letter("t1")
    # Another client purges the list between this client's read and its retry.
    client.delete(keys.dead)
    monkeypatch.setattr(queue_admin, "dead_letter", lambda task_id: stale)

    with pytest.raises(DeadLetterNotFound, match="removed by another client"):
        queue_admin.retry_dead_letter("t1")

    assert client.llen(keys.normal) == 0
    assert client.hexists(keys.tasks, "t1") == 0


def test_requeue_resent_reports_queued(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    dead_letter(queue_scripts, "t1")
    entry = queue_admin.dead_letter("t1")

    # The same call twice, as redis-py resends it after a lost reply.
    first = queue_admin._requeue([entry])
    second = queue_admin._requeue([entry])

    assert first == [admin.REQUEUED]
    assert second == [admin.REQUEUED]
    assert client.llen(keys.normal) == 1


def test_retry_undecodable_message_raises(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    dead_letter(queue_scripts, "t1", UNDECODABLE_MESSAGE)

    with pytest.raises(CannotRetry, match="its message does not decode") as caught:
        queue_admin.retry_dead_letter("t1")

    assert "tasker dead-letter purge" in str(caught.value)
    assert client.llen(keys.dead) == 1
    assert client.llen(keys.normal) == 0


def test_retry_queued_id_keeps_entry(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    entry = dead_letter(queue_scripts, "t1")
    queue_admin.retry_dead_letter("t1")
    # A second copy of the entry, while the retried task is still queued.
    client.lpush(keys.dead, entry)

    with pytest.raises(CannotRetry, match="queued or running already"):
        queue_admin.retry_dead_letter("t1")

    assert client.llen(keys.dead) == 1
    assert client.llen(keys.normal) == 1


def test_retry_all_skips_unretryable(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    for task_id in ("t1", "t2", "t3"):
        dead_letter(queue_scripts, task_id)
    dead_letter(queue_scripts, "bad", UNDECODABLE_MESSAGE)
    client.lpush(keys.dead, b"\xc1")

    report = queue_admin.retry_all_dead_letters()

    assert sorted(entry.task_id for entry in report.requeued) == ["t1", "t2", "t3"]
    assert sorted(entry.task_id for entry, _ in report.skipped) == ["", "bad"]
    assert client.llen(keys.dead) == 2
    assert client.llen(keys.normal) == 3


def test_retry_all_across_batches(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin, "SCRIPT_BATCH", 2)
    for index in range(5):
        dead_letter(queue_scripts, f"t{index}")

    report = queue_admin.retry_all_dead_letters()

    assert len(report.requeued) == 5
    assert report.skipped == []
    assert client.llen(keys.normal) == 5
    assert client.llen(keys.dead) == 0


def test_retry_all_skips_queued_id(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    entry = dead_letter(queue_scripts, "t1")
    queue_admin.retry_dead_letter("t1")
    client.lpush(keys.dead, entry)

    report = queue_admin.retry_all_dead_letters()

    assert report.requeued == []
    assert len(report.skipped) == 1
    assert "queued or running already" in report.skipped[0][1]


def test_purge_dead_letters_counts(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    dead_letter(queue_scripts, "t1")
    dead_letter(queue_scripts, "t2")

    assert queue_admin.purge_dead_letters() == 2
    assert client.exists(keys.dead) == 0
    assert queue_admin.purge_dead_letters() == 0


# Purging the queue


def test_purge_queue_deletes_waiting(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    queue_scripts.enqueue(
        [("a", make_message("a")), ("b", make_message("b"))],
        high_priority=False,
        once=False,
    )
    queue_scripts.enqueue([("c", make_message("c"))], high_priority=True, once=True)
    client.hset(keys.retries, "c", 1)

    assert queue_admin.purge_queue() == 3
    assert client.hlen(keys.tasks) == 0
    assert client.exists(keys.normal) == 0
    assert client.exists(keys.high) == 0
    assert client.exists(keys.wake) == 0
    assert client.scard(keys.once) == 0
    assert client.hlen(keys.retries) == 0


def test_purge_queue_keeps_in_flight(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    queue_scripts.enqueue(
        [("a", make_message("a")), ("b", make_message("b"))],
        high_priority=False,
        once=False,
    )
    (running,) = queue_scripts.claim("w1", LEASE_MS, 1)

    assert queue_admin.purge_queue() == 1
    assert client.hkeys(keys.tasks) == [running.task_id.encode()]
    assert client.zcard(keys.inflight) == 1
    recorded, _ = queue_scripts.finish(
        [FinishedTask(running.task_id, running.claim, b"result", "completed")],
        worker_id="w1",
        lease_ms=LEASE_MS,
        result_ttl_ms=RESULT_TTL_MS,
        claim_next=0,
    )
    assert recorded == [True]


def test_purge_queue_keeps_leased_message(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
) -> None:
    queue_scripts.enqueue([("a", make_message("a"))], high_priority=False, once=False)
    queue_scripts.claim("w1", LEASE_MS, 1)
    # An id both leased and queued: not reachable through the scripts, but
    # the purge must still leave the message to the worker that holds it.
    client.lpush(keys.normal, "a")

    assert queue_admin.purge_queue() == 0
    assert client.hexists(keys.tasks, "a") == 1
    assert client.exists(keys.normal) == 0


def test_purge_queue_in_batches(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin, "PURGE_BATCH", 2)
    queue_scripts.enqueue(
        [(f"n{index}", make_message(f"n{index}")) for index in range(3)],
        high_priority=False,
        once=False,
    )
    queue_scripts.enqueue(
        [(f"h{index}", make_message(f"h{index}")) for index in range(2)],
        high_priority=True,
        once=False,
    )

    assert queue_admin.purge_queue() == 5
    assert client.hlen(keys.tasks) == 0
    assert client.exists(keys.normal, keys.high, keys.wake) == 0


def test_purge_queue_spares_later_tasks(
    queue_admin: QueueAdmin,
    queue_scripts: QueueScripts,
    client: redis.Redis,
    keys: QueueKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin, "PURGE_BATCH", 2)
    queue_scripts.enqueue(
        [(f"n{index}", make_message(f"n{index}")) for index in range(4)],
        high_priority=False,
        once=False,
    )
    call = queue_admin.scripts._call
    calls: list[str] = []

    def call_then_enqueue(name: str, extra_keys: list[str], args: list[Any]) -> Any:
        reply = call(name, extra_keys, args)
        calls.append(name)
        if len(calls) == 1:
            # A producer queues a task between the first and second batch.
            queue_scripts.enqueue(
                [("late", make_message("late"))], high_priority=False, once=False
            )
        return reply

    monkeypatch.setattr(queue_admin.scripts, "_call", call_then_enqueue)

    assert queue_admin.purge_queue() == 4
    assert calls == ["purge_queue", "purge_queue"]
    assert client.hkeys(keys.tasks) == [b"late"]
    assert client.lrange(keys.normal, 0, -1) == [b"late"]
    assert client.llen(keys.wake) == 1


def test_purge_queue_empty_returns_zero(queue_admin: QueueAdmin) -> None:
    assert queue_admin.purge_queue() == 0


def test_claim_after_purge_finds_nothing(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    queue_scripts.enqueue([("a", make_message("a"))], high_priority=False, once=False)
    queue_admin.purge_queue()

    assert queue_scripts.claim("w1", LEASE_MS, 5) == []


# Queueing by name


def test_queue_tasks_encodes_messages(
    queue_admin: QueueAdmin, client: redis.Redis, keys: QueueKeys
) -> None:
    task_ids = queue_admin.queue_tasks(
        "calc.scale",
        [[1, 2], ["x"]],
        {"factor": 3},
        high_priority=True,
        once=True,
        timeout=2.5,
    )

    assert len(task_ids) == 2
    first = ser.TaskMessage.decode(client.hget(keys.tasks, task_ids[0]))
    assert first.task_id == task_ids[0]
    assert first.name == "calc.scale"
    assert first.args == (1, 2)
    assert first.kwargs == {"factor": 3}
    assert first.priority is True
    assert first.once is True
    assert first.timeout == 2.5
    assert first.reply_to is None
    assert first.enqueued_at > 0
    second = ser.TaskMessage.decode(client.hget(keys.tasks, task_ids[1]))
    assert second.args == ("x",)
    assert client.scard(keys.once) == 2


def test_queue_tasks_keeps_order(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    task_ids = queue_admin.queue_tasks("calc.add", [[index] for index in range(5)])

    claimed = queue_scripts.claim("w1", LEASE_MS, 5)

    assert [task.task_id for task in claimed] == task_ids


def test_queue_tasks_reports_progress(
    queue_admin: QueueAdmin,
    client: redis.Redis,
    keys: QueueKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin, "SCRIPT_BATCH", 2)
    monkeypatch.setattr(admin, "CALLS_PER_ROUND_TRIP", 2)
    sent: list[int] = []

    task_ids = queue_admin.queue_tasks(
        "calc.add", [[index] for index in range(9)], progress=sent.append
    )

    assert sent == [4, 4, 1]
    assert len(set(task_ids)) == 9
    assert client.llen(keys.normal) == 9
    assert client.llen(keys.wake) == 9


def test_queue_tasks_oversized_queues_nothing(
    client: redis.Redis, keys: QueueKeys
) -> None:
    small = QueueAdmin(client, keys, max_payload_size=200)

    with pytest.raises(SerializationError, match="more than max_payload_size"):
        small.queue_tasks("calc.echo", [["short"], ["x" * 500]])

    assert client.hlen(keys.tasks) == 0
    assert client.exists(keys.normal) == 0


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_queue_tasks_bad_timeout(
    queue_admin: QueueAdmin, client: redis.Redis, keys: QueueKeys, timeout: float
) -> None:
    with pytest.raises(TaskerError, match="invalid task timeout"):
        queue_admin.queue_tasks("calc.echo", [[1]], timeout=timeout)

    assert client.hlen(keys.tasks) == 0


def test_queue_tasks_empty_batch(queue_admin: QueueAdmin) -> None:
    sent: list[int] = []

    assert queue_admin.queue_tasks("calc.echo", [], progress=sent.append) == []
    assert sent == []


# Waiting for results


@pytest.fixture
def finished_task(queue_admin: QueueAdmin, queue_scripts: QueueScripts) -> str:
    """A task queued by name and completed with the value 42."""
    (task_id,) = queue_admin.queue_tasks("calc.multiply", [[6, 7]])
    (claimed,) = queue_scripts.claim("w1", LEASE_MS, 1)
    result = ser.TaskResult(task_id, ok=True, value=42).encode(MAX_SIZE)
    queue_scripts.finish(
        [FinishedTask(task_id, claimed.claim, result, "completed")],
        worker_id="w1",
        lease_ms=LEASE_MS,
        result_ttl_ms=RESULT_TTL_MS,
        claim_next=0,
    )
    return task_id


def test_wait_result_returns_value(queue_admin: QueueAdmin, finished_task: str) -> None:
    result = queue_admin.wait_result(finished_task, timeout=5)

    assert result.ok is True
    assert result.value == 42
    assert result.task_id == finished_task


def test_wait_result_times_out(queue_admin: QueueAdmin) -> None:
    (task_id,) = queue_admin.queue_tasks("calc.multiply", [[6, 7]])

    with pytest.raises(TimeoutError, match=f"waiting for task {task_id}"):
        queue_admin.wait_result(task_id, timeout=0.05)


def test_retry_clears_old_result(
    queue_admin: QueueAdmin, queue_scripts: QueueScripts
) -> None:
    dead_letter(queue_scripts, "t1")
    assert queue_admin.wait_result("t1", timeout=5).ok is False

    queue_admin.retry_dead_letter("t1")

    with pytest.raises(TimeoutError):
        queue_admin.wait_result("t1", timeout=0.05)
