"""The queue's Lua scripts in scripts.py and lua/, run on fakeredis."""

from __future__ import annotations

from collections.abc import Sequence

import fakeredis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from tasker_redis.keys import QueueKeys
from tasker_redis.scripts import (
    COMPLETED,
    DEAD_LETTERED,
    FAILED,
    ClaimedTask,
    FinishedTask,
    OrphanedTask,
    QueueScripts,
)

LEASE_MS = 10_000
RESULT_TTL_MS = 60_000
# Milliseconds that may pass between a script call and the test's own reading
# of the server clock.
CLOCK_SLACK_MS = 2_000


def message_of(task_id: str) -> bytes:
    return f"message of {task_id}".encode()


def enqueue(
    scripts: QueueScripts, *ids: str, high: bool = False, once: bool = False
) -> int | None:
    pairs = [(task_id, message_of(task_id)) for task_id in ids]
    return scripts.enqueue(pairs, high_priority=high, once=once)


def claim(
    scripts: QueueScripts, worker: str = "w1", count: int = 1, lease_ms: int = LEASE_MS
) -> list[ClaimedTask]:
    return scripts.claim(worker, lease_ms, count)


def outcome(
    task: ClaimedTask | OrphanedTask,
    *,
    result: bytes = b"result",
    counter: str = COMPLETED,
    inbox: str | None = None,
    dead_letter: bytes | None = None,
    claim_value: str | None = None,
    fresh: bool = False,
) -> FinishedTask:
    return FinishedTask(
        task.task_id,
        claim_value if claim_value is not None else task.claim,
        result,
        counter,
        inbox,
        dead_letter,
        fresh=fresh,
    )


def finish(
    scripts: QueueScripts,
    outcomes: list[FinishedTask],
    *,
    worker: str = "w1",
    claim_next: int = 0,
    put_back: Sequence[ClaimedTask] = (),
) -> tuple[list[bool], list[ClaimedTask]]:
    return scripts.finish(
        outcomes,
        worker_id=worker,
        lease_ms=LEASE_MS,
        result_ttl_ms=RESULT_TTL_MS,
        claim_next=claim_next,
        put_back=put_back,
    )


def release(
    scripts: QueueScripts,
    worker: str,
    *,
    count_crash: bool = False,
    max_crashes: int = 3,
    releaser: str = "releaser",
) -> list[OrphanedTask]:
    return scripts.release(
        worker,
        count_crash=count_crash,
        max_crashes=max_crashes,
        releaser_id=releaser,
        lease_ms=LEASE_MS,
    )


def recover(
    scripts: QueueScripts,
    *,
    max_crashes: int = 3,
    limit: int = 100,
    worker_silence_ms: int = 30_000,
) -> list[OrphanedTask]:
    return scripts.recover(
        max_crashes=max_crashes,
        releaser_id="releaser",
        lease_ms=LEASE_MS,
        limit=limit,
        worker_silence_ms=worker_silence_ms,
    )


def server_ms(client: fakeredis.FakeRedis) -> int:
    seconds, microseconds = client.time()
    return int(seconds) * 1000 + int(microseconds) // 1000


def expire_lease(client: fakeredis.FakeRedis, keys: QueueKeys, task_id: str) -> None:
    """Move the lease deadline of a claimed task one minute into the past."""
    client.zadd(keys.inflight, {task_id: server_ms(client) - 60_000}, xx=True)


def ids_of(tasks: Sequence[ClaimedTask | OrphanedTask]) -> list[str]:
    return [task.task_id for task in tasks]


def strings(values: list[bytes]) -> list[str]:
    return [value.decode() for value in values]


def queued_ids(client: fakeredis.FakeRedis, key: str) -> list[str]:
    """Return the ids of a queue list in the order workers pop them."""
    return strings(client.lrange(key, 0, -1))[::-1]


def hash_field(client: fakeredis.FakeRedis, key: str, field: str) -> str | None:
    value = client.hget(key, field)
    return None if value is None else value.decode()


# Enqueue


def test_enqueue_returns_new_count(queue_scripts: QueueScripts) -> None:
    assert enqueue(queue_scripts, "a", "b") == 2


def test_enqueue_stores_messages(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b")

    assert client.hget(keys.tasks, "a") == b"message of a"
    assert queued_ids(client, keys.normal) == ["a", "b"]
    assert client.llen(keys.wake) == 2


def test_enqueue_known_id_skipped(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")

    queued = queue_scripts.enqueue(
        [("a", b"other message")], high_priority=True, once=True
    )

    assert queued == 0
    assert client.hget(keys.tasks, "a") == b"message of a"
    assert queued_ids(client, keys.normal) == ["a"]
    assert client.llen(keys.high) == 0
    assert client.llen(keys.wake) == 1
    assert client.sismember(keys.once, "a") == 0


def test_enqueue_claimed_id_skipped(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts)

    assert enqueue(queue_scripts, "a") == 0
    assert client.llen(keys.normal) == 0


def test_enqueue_id_with_result_skipped(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    client.rpush(keys.result("a"), b"earlier result")

    assert enqueue(queue_scripts, "a") == 0
    assert client.hexists(keys.tasks, "a") == 0
    assert client.exists(keys.normal) == 0
    assert client.exists(keys.wake) == 0


def test_enqueue_batch_skips_known_only(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")

    assert enqueue(queue_scripts, "a", "b", "c") == 2
    assert queued_ids(client, keys.normal) == ["a", "b", "c"]


def test_enqueue_same_id_twice_in_one_call(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    queued = queue_scripts.enqueue(
        [("a", b"first"), ("a", b"second")], high_priority=False, once=False
    )

    assert queued == 1
    assert client.hget(keys.tasks, "a") == b"first"
    assert queued_ids(client, keys.normal) == ["a"]
    assert client.llen(keys.wake) == 1


def test_enqueue_many_ids_in_one_call(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    # More ids than the Lua in Redis can unpack() at once (under 8000), so
    # enqueue.lua must push them in several commands.
    ids = [f"t{index}" for index in range(8_500)]

    assert enqueue(queue_scripts, *ids, once=True) == 8_500
    assert queued_ids(client, keys.normal) == ids
    assert client.hlen(keys.tasks) == 8_500
    assert client.hget(keys.tasks, "t8499") == b"message of t8499"
    assert client.scard(keys.once) == 8_500
    assert client.llen(keys.wake) == 8_500
    assert client.hget(keys.counters, "queued") == b"8500"


def test_enqueue_high_priority_list(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "h", high=True)

    assert queued_ids(client, keys.high) == ["h"]
    assert client.exists(keys.normal) == 0


def test_enqueue_once_marks_task(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "o", once=True)
    enqueue(queue_scripts, "n")

    assert client.sismember(keys.once, "o") == 1
    assert client.sismember(keys.once, "n") == 0


def test_enqueue_in_pipeline_returns_none(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    with client.pipeline(transaction=False) as pipe:
        reply = queue_scripts.enqueue(
            [("a", b"m")], high_priority=False, once=False, client=pipe
        )
        executed = pipe.execute()

    assert reply is None
    assert executed == [1]
    assert client.hget(keys.tasks, "a") == b"m"


# Claim


def test_claim_high_before_normal(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "n1", "n2")
    enqueue(queue_scripts, "h1", "h2", high=True)

    claimed = claim(queue_scripts, count=10)

    assert ids_of(claimed) == ["h1", "h2", "n1", "n2"]
    assert [task.high_priority for task in claimed] == [True, True, False, False]


def test_claim_fifo_across_calls(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "n1")
    enqueue(queue_scripts, "h1", high=True)
    enqueue(queue_scripts, "n2")
    enqueue(queue_scripts, "h2", high=True)

    order = [ids_of(claim(queue_scripts))[0] for _ in range(4)]

    assert order == ["h1", "h2", "n1", "n2"]
    assert claim(queue_scripts) == []


def test_claim_returns_task_fields(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a")

    [task] = claim(queue_scripts, worker="w7")

    assert task.task_id == "a"
    assert task.message == b"message of a"
    assert task.claim == "1:w7"
    assert task.retries == 0
    assert task.crashes == 0
    assert task.high_priority is False


def test_claim_leases_task(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    before = server_ms(client)

    [task] = claim(queue_scripts, worker="w1", lease_ms=LEASE_MS)

    deadline = client.zscore(keys.inflight, "a")
    assert deadline >= before + LEASE_MS
    assert deadline <= before + LEASE_MS + CLOCK_SLACK_MS
    assert hash_field(client, keys.claims, "a") == task.claim
    assert client.llen(keys.normal) == 0


def test_claim_fencing_tokens_increase(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a", "b")
    [first] = claim(queue_scripts)
    [second] = claim(queue_scripts, worker="w2")
    queue_scripts.retry(first.task_id, first.claim)
    [again] = claim(queue_scripts)

    tokens = [int(task.claim.split(":")[0]) for task in (first, second, again)]

    assert tokens == [1, 2, 3]
    assert second.claim == "2:w2"


def test_claim_nothing_when_empty(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    assert claim(queue_scripts, count=5) == []
    assert client.exists(keys.inflight) == 0


def test_claim_zero_count(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")

    assert claim(queue_scripts, count=0) == []
    assert client.llen(keys.normal) == 1


def test_claim_skips_purged_id(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b")
    client.hdel(keys.tasks, "a")

    claimed = claim(queue_scripts, count=2)

    assert ids_of(claimed) == ["b"]
    assert client.zscore(keys.inflight, "a") is None


# Finish


def test_finish_records_result(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    recorded, claimed = finish(queue_scripts, [outcome(task, result=b"value")])

    assert recorded == [True]
    assert claimed == []
    assert client.lrange(keys.result("a"), 0, -1) == [b"value"]
    assert 0 < client.pttl(keys.result("a")) <= RESULT_TTL_MS


def test_finish_replaces_stale_result(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)
    client.rpush(keys.result("a"), b"partial")

    finish(queue_scripts, [outcome(task, result=b"value")])

    assert client.lrange(keys.result("a"), 0, -1) == [b"value"]


def test_finish_pushes_inbox_when_given(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    inbox = keys.inbox("m1")
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    finish(queue_scripts, [outcome(task, result=b"value", inbox=inbox)])

    assert client.lrange(inbox, 0, -1) == [b"value"]
    assert 0 < client.pttl(inbox) <= RESULT_TTL_MS


def test_finish_without_inbox_pushes_none(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    finish(queue_scripts, [outcome(task, result=b"value")])

    assert client.keys(keys.prefix + "inbox:*") == []
    assert client.lrange(keys.result("a"), 0, -1) == [b"value"]


def test_finish_increments_counter(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b", "c")
    first, second, third = claim(queue_scripts, count=3)

    finish(
        queue_scripts,
        [
            outcome(first, counter=COMPLETED),
            outcome(second, counter=FAILED),
            outcome(third, counter=COMPLETED),
        ],
    )

    assert client.hgetall(keys.counters) == {
        b"queued": b"3",
        b"completed": b"2",
        b"failed": b"1",
    }


def test_finish_pushes_dead_letter(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b")
    first, second = claim(queue_scripts, count=2)

    finish(
        queue_scripts,
        [
            outcome(first, counter=DEAD_LETTERED, dead_letter=b"entry a"),
            outcome(second, counter=DEAD_LETTERED, dead_letter=b"entry b"),
        ],
    )

    assert client.lrange(keys.dead, 0, -1) == [b"entry b", b"entry a"]
    assert hash_field(client, keys.counters, DEAD_LETTERED) == "2"


def test_finish_without_dead_letter(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    finish(queue_scripts, [outcome(task)])

    assert client.exists(keys.dead) == 0


def test_finish_forgets_task(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", once=True)
    [task] = claim(queue_scripts)
    client.hset(keys.retries, "a", 1)
    client.hset(keys.crashes, "a", 2)

    finish(queue_scripts, [outcome(task)])

    assert client.hexists(keys.tasks, "a") == 0
    assert client.zscore(keys.inflight, "a") is None
    assert client.hexists(keys.claims, "a") == 0
    assert client.hexists(keys.retries, "a") == 0
    assert client.hexists(keys.crashes, "a") == 0
    assert client.sismember(keys.once, "a") == 0


def test_finish_fresh_task_forgets_task(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", once=True)
    [task] = claim(queue_scripts)
    assert (task.retries, task.crashes) == (0, 0)

    recorded, _ = finish(queue_scripts, [outcome(task, fresh=True)])

    assert recorded == [True]
    assert client.hexists(keys.tasks, "a") == 0
    assert client.zscore(keys.inflight, "a") is None
    assert client.hexists(keys.claims, "a") == 0
    assert client.sismember(keys.once, "a") == 0
    assert client.lrange(keys.result("a"), 0, -1) == [b"result"]


def test_finish_stale_claim_records_nothing(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [stale] = claim(queue_scripts, worker="w1")
    release(queue_scripts, "w1")
    [current] = claim(queue_scripts, worker="w2")

    recorded, _ = finish(
        queue_scripts,
        [outcome(stale, inbox=keys.inbox("m1"), dead_letter=b"entry")],
        worker="w1",
    )

    assert recorded == [False]
    assert client.exists(keys.result("a")) == 0
    assert client.exists(keys.inbox("m1")) == 0
    assert client.exists(keys.dead) == 0
    assert client.hmget(keys.counters, "completed", "failed", "retried") == [
        None,
        None,
        None,
    ]
    assert client.hget(keys.tasks, "a") == b"message of a"
    assert hash_field(client, keys.claims, "a") == current.claim


def test_finish_unknown_task_records_nothing(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    fake_claim = ClaimedTask("ghost", "1:w1", b"m", 0, 0, False)

    recorded, _ = finish(queue_scripts, [outcome(fake_claim)])

    assert recorded == [False]
    assert client.exists(keys.result("ghost")) == 0


def test_finish_mixed_stale_and_current(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a", "b")
    first, second = claim(queue_scripts, count=2)

    recorded, _ = finish(
        queue_scripts,
        [outcome(first, claim_value="999:w1"), outcome(second)],
    )

    assert recorded == [False, True]


def test_finish_claims_next_tasks(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b", "c")
    [task] = claim(queue_scripts)

    _, claimed = finish(queue_scripts, [outcome(task)], claim_next=5)

    assert ids_of(claimed) == ["b", "c"]
    assert hash_field(client, keys.claims, "b") == claimed[0].claim


# Put back


def test_put_back_keeps_original_order(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b", "c")
    enqueue(queue_scripts, "h1", "h2", high=True)
    claimed = claim(queue_scripts, count=5)

    finish(queue_scripts, [], put_back=claimed)

    assert queued_ids(client, keys.high) == ["h1", "h2"]
    assert queued_ids(client, keys.normal) == ["a", "b", "c"]


def test_put_back_goes_before_queued(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a", "b", "c", "d")
    claimed = claim(queue_scripts, count=2)

    finish(queue_scripts, [], put_back=claimed)

    assert ids_of(claim(queue_scripts, count=4)) == ["a", "b", "c", "d"]


def test_put_back_after_finish_same_call(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a", "b", "c")
    done, unstarted, _ = claim(queue_scripts, count=3)

    recorded, claimed = finish(
        queue_scripts, [outcome(done)], put_back=[unstarted], claim_next=5
    )

    assert recorded == [True]
    assert ids_of(claimed) == ["b"]


def test_put_back_releases_lease(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    claimed = claim(queue_scripts)

    finish(queue_scripts, [], put_back=claimed)

    assert client.zscore(keys.inflight, "a") is None
    assert client.hexists(keys.claims, "a") == 0
    assert client.llen(keys.wake) == 1


def test_put_back_stale_claim_ignored(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)
    client.hset(keys.claims, "a", "99:w2")

    finish(queue_scripts, [], put_back=[task])

    assert client.exists(keys.normal) == 0
    assert hash_field(client, keys.claims, "a") == "99:w2"


# Retry


def test_retry_requeues_high_priority(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    retried = queue_scripts.retry(task.task_id, task.claim)

    assert retried is True
    assert queued_ids(client, keys.high) == ["a"]
    assert client.zscore(keys.inflight, "a") is None
    assert client.hexists(keys.claims, "a") == 0
    assert client.llen(keys.wake) == 1


def test_retry_counts_retries(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)
    queue_scripts.retry(task.task_id, task.claim)
    [again] = claim(queue_scripts)
    queue_scripts.retry(again.task_id, again.claim)

    [third] = claim(queue_scripts)

    assert again.retries == 1
    assert again.high_priority is True
    assert third.retries == 2
    assert hash_field(client, keys.counters, "retried") == "2"


def test_retry_queues_behind_high(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)
    enqueue(queue_scripts, "h", high=True)

    queue_scripts.retry(task.task_id, task.claim)

    assert ids_of(claim(queue_scripts, count=2)) == ["h", "a"]


def test_retry_stale_claim_rejected(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    retried = queue_scripts.retry(task.task_id, "999:w1")

    assert retried is False
    assert client.exists(keys.high) == 0
    assert client.exists(keys.retries) == 0
    assert client.hmget(keys.counters, "completed", "failed", "retried") == [
        None,
        None,
        None,
    ]
    assert hash_field(client, keys.claims, "a") == task.claim


# Release


def test_release_requeues_front_of_high(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")
    enqueue(queue_scripts, "h", high=True)

    orphans = release(queue_scripts, "w1")
    claimed = claim(queue_scripts, worker="w2", count=2)

    assert orphans == []
    assert ids_of(claimed) == ["a", "h"]
    assert claimed[0].high_priority is True


def test_release_clears_lease(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")

    release(queue_scripts, "w1")

    assert client.zscore(keys.inflight, "a") is None
    assert client.hexists(keys.claims, "a") == 0
    assert client.llen(keys.wake) == 1


def test_release_only_given_worker(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b")
    claim(queue_scripts, worker="w1")
    [other] = claim(queue_scripts, worker="w10")

    release(queue_scripts, "w1")

    assert hash_field(client, keys.claims, "b") == other.claim
    assert queued_ids(client, keys.high) == ["a"]


def test_release_without_crash_count(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")

    release(queue_scripts, "w1", count_crash=False)
    [again] = claim(queue_scripts, worker="w2")

    assert client.exists(keys.crashes) == 0
    assert again.crashes == 0


def test_release_counts_crash(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")

    release(queue_scripts, "w1", count_crash=True)
    [again] = claim(queue_scripts, worker="w2")

    assert hash_field(client, keys.crashes, "a") == "1"
    assert again.crashes == 1


def test_release_once_task_orphaned(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "o", once=True)
    [task] = claim(queue_scripts, worker="w1")
    before = server_ms(client)

    orphans = release(queue_scripts, "w1", releaser="sup")

    assert ids_of(orphans) == ["o"]
    [orphan] = orphans
    assert orphan.message == b"message of o"
    assert orphan.crashes == 0
    assert orphan.claim.endswith(":sup")
    assert int(orphan.claim.split(":")[0]) > int(task.claim.split(":")[0])
    assert hash_field(client, keys.claims, "o") == orphan.claim
    assert client.zscore(keys.inflight, "o") >= before + LEASE_MS
    assert client.exists(keys.high) == 0
    assert client.exists(keys.wake) == 0


def test_release_once_task_counts_crash(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "o", once=True)
    claim(queue_scripts, worker="w1")

    [orphan] = release(queue_scripts, "w1", count_crash=True)

    assert orphan.crashes == 1


def test_release_over_max_crashes_orphaned(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")
    first = release(queue_scripts, "w1", count_crash=True, max_crashes=1)
    claim(queue_scripts, worker="w2")

    second = release(queue_scripts, "w2", count_crash=True, max_crashes=1)

    assert first == []
    assert ids_of(second) == ["a"]
    assert second[0].crashes == 2


def test_release_zero_max_crashes_orphaned(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")

    orphans = release(queue_scripts, "w1", count_crash=True, max_crashes=0)

    assert ids_of(orphans) == ["a"]


def test_release_orphan_claim_finishes(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "o", once=True)
    [task] = claim(queue_scripts, worker="w1")
    [orphan] = release(queue_scripts, "w1", releaser="sup")

    late, _ = finish(queue_scripts, [outcome(task)], worker="w1")
    recorded, _ = finish(
        queue_scripts, [outcome(orphan, result=b"lost", counter="lost")], worker="sup"
    )

    assert late == [False]
    assert recorded == [True]
    assert client.lrange(keys.result("o"), 0, -1) == [b"lost"]
    assert client.sismember(keys.once, "o") == 0


def test_release_missing_message_drops_lease(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    claim(queue_scripts, worker="w1")
    client.hdel(keys.tasks, "a")

    orphans = release(queue_scripts, "w1")

    assert orphans == []
    assert client.exists(keys.inflight) == 0
    assert client.exists(keys.claims) == 0
    assert client.exists(keys.high) == 0


# Takeover


def test_takeover_leases_to_releaser(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts, worker="w1")
    client.hset(keys.crashes, "a", 2)
    before = server_ms(client)

    orphan = queue_scripts.takeover(
        "a", "w1", releaser_id="supervisor", lease_ms=LEASE_MS
    )

    assert orphan is not None
    assert orphan.task_id == "a"
    assert orphan.message == b"message of a"
    assert orphan.crashes == 2
    assert orphan.claim.endswith(":supervisor")
    assert orphan.claim != task.claim
    assert hash_field(client, keys.claims, "a") == orphan.claim
    assert client.zscore(keys.inflight, "a") >= before + LEASE_MS


def test_takeover_other_worker_none(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts, worker="w10")

    orphan = queue_scripts.takeover("a", "w1", releaser_id="sup", lease_ms=LEASE_MS)

    assert orphan is None
    assert hash_field(client, keys.claims, "a") == task.claim


def test_takeover_finished_task_none(queue_scripts: QueueScripts) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts, worker="w1")
    finish(queue_scripts, [outcome(task)])

    orphan = queue_scripts.takeover("a", "w1", releaser_id="sup", lease_ms=LEASE_MS)

    assert orphan is None


# Recover


def test_recover_releases_expired_only(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "expired", "live")
    claim(queue_scripts, worker="w1", count=2)
    expire_lease(client, keys, "expired")

    orphans = recover(queue_scripts)

    assert orphans == []
    assert queued_ids(client, keys.high) == ["expired"]
    assert hash_field(client, keys.crashes, "expired") == "1"
    assert client.zscore(keys.inflight, "live") is not None
    assert client.hexists(keys.claims, "live") == 1


def test_recover_nothing_expired(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)

    assert recover(queue_scripts) == []
    assert hash_field(client, keys.claims, "a") == task.claim
    assert client.exists(keys.high) == 0


def test_recover_once_task_orphaned(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "o", once=True)
    claim(queue_scripts)
    expire_lease(client, keys, "o")

    [orphan] = recover(queue_scripts)

    assert orphan.task_id == "o"
    assert orphan.claim.endswith(":releaser")
    assert orphan.crashes == 1
    assert client.zscore(keys.inflight, "o") > server_ms(client)


def test_recover_respects_limit(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b", "c")
    claim(queue_scripts, count=3)
    for task_id in ("a", "b", "c"):
        expire_lease(client, keys, task_id)

    recover(queue_scripts, limit=2)

    assert client.llen(keys.high) == 2
    assert client.zcard(keys.inflight) == 1


def test_recover_drops_silent_workers(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    now = server_ms(client)
    client.zadd(keys.workers, {"silent": now - 60_000, "recent": now})

    recover(queue_scripts, worker_silence_ms=30_000)

    assert client.zscore(keys.workers, "silent") is None
    assert client.zscore(keys.workers, "recent") == now


# Heartbeat


def test_heartbeat_extends_matching_leases(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "owned", "taken")
    owned, taken = claim(queue_scripts, worker="w1", count=2)
    expire_lease(client, keys, "owned")
    expire_lease(client, keys, "taken")
    taken_deadline = client.zscore(keys.inflight, "taken")
    client.hset(keys.claims, "taken", "99:w2")
    before = server_ms(client)

    queue_scripts.heartbeat(
        "w1",
        lease_ms=LEASE_MS,
        info_ttl_ms=30_000,
        current_task="owned",
        leases=[(owned.task_id, owned.claim), (taken.task_id, taken.claim)],
    )

    assert client.zscore(keys.inflight, "owned") >= before + LEASE_MS
    assert client.zscore(keys.inflight, "taken") == taken_deadline


def test_heartbeat_skips_finished_task(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a")
    [task] = claim(queue_scripts)
    finish(queue_scripts, [outcome(task)])

    queue_scripts.heartbeat(
        "w1",
        lease_ms=LEASE_MS,
        info_ttl_ms=30_000,
        current_task="",
        leases=[(task.task_id, task.claim)],
    )

    assert client.exists(keys.inflight) == 0


def test_heartbeat_records_worker(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    now = queue_scripts.heartbeat(
        "w1", lease_ms=LEASE_MS, info_ttl_ms=30_000, current_task="a", leases=[]
    )

    info = client.hgetall(keys.worker_info("w1"))
    assert abs(now - server_ms(client)) <= CLOCK_SLACK_MS
    assert client.zscore(keys.workers, "w1") == now
    assert info[b"current_task"] == b"a"
    assert info[b"heartbeat_ms"] == str(now).encode()
    assert 0 < client.pttl(keys.worker_info("w1")) <= 30_000


# Counts


def test_counts_empty_queue(queue_scripts: QueueScripts) -> None:
    counts = queue_scripts.counts(10_000)

    assert counts.normal == 0
    assert counts.high == 0
    assert counts.in_flight == 0
    assert counts.workers_alive == 0
    assert counts.dead_letters == 0
    assert counts.counters == {}


def test_counts_report_depths(
    queue_scripts: QueueScripts, client: fakeredis.FakeRedis, keys: QueueKeys
) -> None:
    enqueue(queue_scripts, "a", "b", "c")
    enqueue(queue_scripts, "h", high=True)
    first, second = claim(queue_scripts, count=2)
    finish(
        queue_scripts,
        [
            outcome(first, counter=DEAD_LETTERED, dead_letter=b"entry"),
        ],
    )
    queue_scripts.retry(second.task_id, second.claim)
    claim(queue_scripts)
    now = server_ms(client)
    client.zadd(keys.workers, {"live": now, "gone": now - 60_000})

    counts = queue_scripts.counts(10_000)

    assert counts.normal == 2
    assert counts.high == 0
    assert counts.in_flight == 1
    assert counts.workers_alive == 1
    assert counts.dead_letters == 1
    assert counts.counters == {"queued": 4, DEAD_LETTERED: 1, "retried": 1}


# The wake-token list and the queue/lease invariant under random sequences


class QueueStateMachine(RuleBasedStateMachine):
    """Random sequences of every script, checking the queue's invariants."""

    workers = ("w1", "w2")

    def __init__(self) -> None:
        super().__init__()
        self.client = fakeredis.FakeRedis()
        self.keys = QueueKeys("stateful")
        self.scripts = QueueScripts(self.client, self.keys)
        self.next_id = 0
        self.high_priority: dict[str, bool] = {}

    def teardown(self) -> None:
        self.client.close()

    def held(self, worker: str | None = None) -> list[ClaimedTask]:
        """Return the claimed tasks, or those of one worker, with current claims."""
        tasks = []
        for raw_id, raw_claim in sorted(self.client.hgetall(self.keys.claims).items()):
            task_id, claim_value = raw_id.decode(), raw_claim.decode()
            if worker is not None and not claim_value.endswith(":" + worker):
                continue
            high = self.high_priority.get(task_id, False)
            tasks.append(ClaimedTask(task_id, claim_value, b"", 0, 0, high))
        return tasks

    def remember(self, claimed: list[ClaimedTask]) -> None:
        for task in claimed:
            self.high_priority[task.task_id] = task.high_priority

    @rule(
        count=st.integers(1, 3),
        high=st.booleans(),
        once=st.booleans(),
        resend=st.booleans(),
    )
    def enqueue_tasks(self, count: int, high: bool, once: bool, resend: bool) -> None:
        ids = []
        for _ in range(count):
            self.next_id += 1
            ids.append(f"t{self.next_id}")
        if resend and self.next_id > count:
            ids.append(f"t{self.next_id - count}")
        enqueue(self.scripts, *ids, high=high, once=once)

    @rule(worker=st.sampled_from(workers), count=st.integers(0, 3))
    def claim_tasks(self, worker: str, count: int) -> None:
        self.remember(claim(self.scripts, worker=worker, count=count))

    @rule(
        worker=st.sampled_from((*workers, "releaser")),
        data=st.data(),
        claim_next=st.integers(0, 2),
    )
    def finish_tasks(self, worker: str, data: st.DataObject, claim_next: int) -> None:
        held = self.held(worker)
        done = [task for task in held if data.draw(st.booleans())]
        put_back = [
            task for task in held if task not in done and data.draw(st.booleans())
        ]
        stale = data.draw(st.booleans())
        outcomes = [
            outcome(task, claim_value="0:stale" if stale else None) for task in done
        ]
        recorded, claimed = finish(
            self.scripts,
            outcomes,
            worker=worker if worker != "releaser" else "w1",
            claim_next=claim_next,
            put_back=put_back,
        )
        assert recorded == [not stale] * len(done)
        self.remember(claimed)

    @precondition(lambda self: self.client.hlen(self.keys.claims) > 0)
    @rule(data=st.data())
    def retry_task(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.held()))
        assert self.scripts.retry(task.task_id, task.claim) is True
        self.high_priority[task.task_id] = True

    @rule(worker=st.sampled_from(workers), count_crash=st.booleans())
    def release_worker(self, worker: str, count_crash: bool) -> None:
        for task in self.held(worker):
            self.high_priority[task.task_id] = True
        release(self.scripts, worker, count_crash=count_crash, max_crashes=1)

    @precondition(lambda self: self.client.hlen(self.keys.claims) > 0)
    @rule(data=st.data())
    def expire_and_recover(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from(self.held()))
        expire_lease(self.client, self.keys, task.task_id)
        self.high_priority[task.task_id] = True
        recover(self.scripts, max_crashes=1)

    @invariant()
    def wake_tokens_cover_queued(self) -> None:
        queued = self.client.llen(self.keys.high) + self.client.llen(self.keys.normal)
        tokens = self.client.llen(self.keys.wake)
        assert tokens >= queued
        if queued == 0:
            assert self.client.exists(self.keys.wake) == 0

    @invariant()
    def task_queued_or_leased(self) -> None:
        queued = strings(self.client.lrange(self.keys.high, 0, -1))
        queued += strings(self.client.lrange(self.keys.normal, 0, -1))
        leased = set(strings(self.client.zrange(self.keys.inflight, 0, -1)))
        claimed = set(strings(list(self.client.hkeys(self.keys.claims))))
        known = set(strings(list(self.client.hkeys(self.keys.tasks))))
        assert len(queued) == len(set(queued))
        assert leased == claimed
        assert set(queued).isdisjoint(leased)
        assert set(queued) | leased == known


QueueStateMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None
)
TestQueueStateMachine = QueueStateMachine.TestCase
