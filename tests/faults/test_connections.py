"""Fault runs that break the Redis connections of workers and producers.

Every task of apps.conn_tasks counts its runs in Redis through a connection
that no fault touches, and the test keeps every result its callers receive,
so a run can tell lost tasks from tasks that ran twice. The load runs in
background threads while the test thread injects the faults. A run ends when
every caller has its result or after RUN_TIMEOUT seconds, and then a missing
result counts as lost. `pytest -s` prints the figures of each run.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from apps import conn_tasks
from faults.proxy import TcpProxy
from helpers import wait_until

from tasker_redis import Config, ConfigError, TaskFuture, TaskManager
from tasker_redis.connection import Backoff, create_client
from tasker_redis.keys import QueueKeys
from tasker_redis.local_server import LocalRedisServer

KEYS = QueueKeys(conn_tasks.QUEUE)

# Seconds a whole run may take before its missing results count as lost.
RUN_TIMEOUT = 30.0
# Async tasks a producer keeps unfinished at once, so that it queues tasks
# and receives results through the whole run rather than in one burst.
WINDOW = 200

# Names that tasker-redis gives its Redis clients.
TASKER_CLIENT_NAMES = re.compile(r"^tasker(-worker-.+|-supervisor)?$")

# Blocking calls of the proxied runs wait BLOCK_TIMEOUT and their socket
# reads time out after SOCKET_TIMEOUT. A stall outlasts that timeout.
BLOCK_TIMEOUT = 0.5
SOCKET_TIMEOUT = 1.5
STALL_SECONDS = SOCKET_TIMEOUT + 1.0
PROXY_WORKERS = 2
# Seconds between two fault rounds of the proxied runs.
FAULT_INTERVAL = 0.3

# A worker's log line for a connection error it caught, with the delay it
# waits before trying again.
WORKER_RETRY_LINE = re.compile(
    r"worker (?P<worker>\S+) (lost the Redis connection to \S+|could not record "
    r"\d+ results): .*; retrying in (?P<delay>[\d.]+) s"
)
# A WARNING or ERROR line that tasker-redis logged in a worker process.
WORKER_PROBLEM_LINE = re.compile(r" (WARNING|ERROR) \S+ tasker_redis\.")
# The delay at the end of a producer's log message about a connection error.
PRODUCER_DELAY = re.compile(r"(?:retrying|reconnecting) in (?P<delay>[\d.]+) s$")

MakeManager = Callable[..., TaskManager]


@pytest.fixture
def conn_manager(redis_url: str) -> Iterator[MakeManager]:
    """Return a function that creates a TaskManager for the apps.conn_tasks queue.

    Its arguments go to conn_tasks.make_config, and the URL defaults to the
    test's server. Every manager is killed after the test, which fails the
    futures and wakes the callers still waiting.
    """
    managers: list[TaskManager] = []

    def make(url: str | None = None, **settings: float) -> TaskManager:
        manager = TaskManager(conn_tasks.make_config(url or redis_url, **settings))
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.kill()


@dataclass
class Proxies:
    """TCP proxies in front of the test's server, one per side of the queue.

    Attributes:
        workers: The proxy of the worker processes.
        producer: The proxy of the test's producer.
        direct_url: The URL of the server itself, past both proxies.
    """

    workers: TcpProxy
    producer: TcpProxy
    direct_url: str


@pytest.fixture
def proxies(redis_server: LocalRedisServer) -> Iterator[Proxies]:
    """Two running proxies, for the worker processes and the test's producer."""
    with (
        TcpProxy(redis_server.port) as workers,
        TcpProxy(redis_server.port) as producer,
    ):
        yield Proxies(workers, producer, redis_server.url)


# The load


@dataclass
class Outcomes:
    """What the callers of one run received, by task index.

    Attributes:
        values: Index to the value the caller received.
        errors: Index to the exception the caller received.
    """

    values: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, BaseException] = field(default_factory=dict)

    def lost(self, indexes: range) -> list[int]:
        """Return the indexes whose caller has no correct value."""
        return [i for i in indexes if self.values.get(i) != i]

    def error_types(self) -> dict[str, int]:
        return dict(Counter(type(error).__name__ for error in self.errors.values()))


class AsyncLoad:
    """Queues one conn.count task per index with queue_task_async, from a thread.

    At most WINDOW tasks are unfinished at once. The thread stops queueing
    if results stop arriving, and records every outcome it has at the end of
    the run.
    """

    def __init__(self, manager: TaskManager, indexes: range, seconds: float) -> None:
        self.outcomes = Outcomes()
        self.futures: dict[int, TaskFuture] = {}
        self.finished = threading.Event()
        self._manager = manager
        self._indexes = indexes
        self._seconds = seconds
        self._thread = threading.Thread(target=self._run, name="async-load")

    def start(self) -> AsyncLoad:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        slots = threading.BoundedSemaphore(WINDOW)
        try:
            for index in self._indexes:
                if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break
                future = self._manager.queue_task_async(
                    conn_tasks.count, index, self._seconds
                )
                future.add_done_callback(lambda _: slots.release())
                self.futures[index] = future
            remaining = max(0.0, deadline - time.monotonic())
            concurrent.futures.wait(self.futures.values(), timeout=remaining)
            for index, future in self.futures.items():
                if not future.done():
                    continue
                if future.exception() is not None:
                    self.outcomes.errors[index] = future.exception()
                else:
                    self.outcomes.values[index] = future.result()
        finally:
            self.finished.set()


class BlockingCallers:
    """Threads that each call queue_task for their share of the indexes in turn."""

    def __init__(
        self, manager: TaskManager, shares: list[range], seconds: float
    ) -> None:
        self.outcomes = Outcomes()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._call_all,
                args=(manager, share, seconds),
                name=f"blocking-caller-{number}",
                daemon=True,
            )
            for number, share in enumerate(shares)
        ]

    def start(self) -> BlockingCallers:
        for thread in self._threads:
            thread.start()
        return self

    def finished(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def join(self, deadline: float) -> None:
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _call_all(self, manager: TaskManager, share: range, seconds: float) -> None:
        for index in share:
            try:
                value = manager.queue_task(conn_tasks.count, index, seconds)
            except Exception as exc:
                with self._lock:
                    self.outcomes.errors[index] = exc
            else:
                with self._lock:
                    self.outcomes.values[index] = value


def start_conn_workers(
    start_workers: Callable[..., Any],
    client: redis.Redis,
    count: int,
    env: dict[str, str] | None = None,
) -> Any:
    """Start `tasker worker apps.conn_tasks:config` and wait for its workers."""
    workers = start_workers(
        "apps.conn_tasks:config", "--workers", str(count), env=env or {}
    )
    wait_until(lambda: client.zcard(KEYS.workers) == count)
    return workers


def proxied_worker_env(proxies: Proxies, **extra: str) -> dict[str, str]:
    """Return the environment of workers that reach the queue through a proxy."""
    return {
        "TASKER_REDIS_URL": proxies.workers.url,
        "CONN_COUNTER_URL": proxies.direct_url,
        "CONN_BLOCK_TIMEOUT": str(BLOCK_TIMEOUT),
        "CONN_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
        **extra,
    }


# Reading the figures


def read_runs(client: redis.Redis) -> dict[int, int]:
    """Return task index to the number of times a task with it ran."""
    raw = client.hgetall(conn_tasks.RUNS_KEY)
    return {int(index): int(count) for index, count in raw.items()}


def never_ran(runs: dict[int, int], indexes: range) -> list[int]:
    return [i for i in indexes if runs.get(i, 0) == 0]


def ran_twice(runs: dict[int, int]) -> list[int]:
    return sorted(index for index, count in runs.items() if count > 1)


def queue_counters(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(KEYS.counters)
    return {key.decode(): int(value) for key, value in raw.items()}


def leftover_tasks(client: redis.Redis) -> int:
    """Return the tasks still queued, in flight or stored in the queue's keys."""
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(KEYS.normal)
        pipe.llen(KEYS.high)
        pipe.zcard(KEYS.inflight)
        pipe.hlen(KEYS.tasks)
        return sum(int(count) for count in pipe.execute())


def stored_results(client: redis.Redis, futures: list[TaskFuture]) -> int:
    """Return how many of the tasks have a result stored in Redis."""
    with client.pipeline(transaction=False) as pipe:
        for future in futures:
            pipe.exists(KEYS.result(future.task_id))
        return sum(int(found) for found in pipe.execute())


def worker_delays(log: str) -> dict[str, list[float]]:
    """Return worker id to the retry delays it logged, in order."""
    delays: dict[str, list[float]] = {}
    for match in WORKER_RETRY_LINE.finditer(log):
        delays.setdefault(match["worker"], []).append(float(match["delay"]))
    return delays


def producer_delays(records: list[logging.LogRecord]) -> list[float]:
    """Return the retry delays that the test process logged."""
    delays = []
    for record in records:
        match = PRODUCER_DELAY.search(record.getMessage())
        if match:
            delays.append(float(match["delay"]))
    return delays


def report(title: str, **figures: object) -> None:
    """Print one line of figures, shown by `pytest -s` and on failure."""
    details = " ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\n[{title}] {details}", flush=True)


# CLIENT KILL

KILL_INTERVAL = 0.1
KILL_TASKS = 1000
KILL_WORKERS = 3
# Seconds each async task runs, so that a run spans many kill rounds.
KILL_TASK_SECONDS = 0.005
# Blocking callers, the tasks each queues in turn, and the seconds each of
# those tasks runs, so that kills land while the callers wait.
CALLERS = 4
CALLS = 10
CALL_SECONDS = 0.2


def kill_tasker_clients(client: redis.Redis) -> int:
    """CLIENT KILL every connection named like a tasker-redis client.

    The tasks' run counters connect under another name and stay alive.
    Returns the number of connections killed.
    """
    killed = 0
    for entry in client.client_list():
        if TASKER_CLIENT_NAMES.match(entry["name"]):
            killed += client.client_kill_filter(_id=entry["id"])
    return killed


@pytest.mark.e2e
@pytest.mark.slow
def test_client_kill_loses_nothing(
    start_workers, conn_manager: MakeManager, redis_client: redis.Redis
) -> None:
    start_conn_workers(start_workers, redis_client, KILL_WORKERS)
    async_indexes = range(KILL_TASKS)
    blocking_indexes = range(KILL_TASKS, KILL_TASKS + CALLERS * CALLS)
    shares = [range(start, start + CALLS) for start in blocking_indexes[::CALLS]]

    started = time.monotonic()
    load = AsyncLoad(conn_manager(), async_indexes, KILL_TASK_SECONDS).start()
    callers = BlockingCallers(conn_manager(), shares, CALL_SECONDS).start()
    rounds = killed = 0
    deadline = started + RUN_TIMEOUT
    while time.monotonic() < deadline and not (
        load.finished.is_set() and callers.finished()
    ):
        # The kill cadence is the fault under test, not a wait for a state.
        time.sleep(KILL_INTERVAL)
        rounds += 1
        killed += kill_tasker_clients(redis_client)
    load.join()
    callers.join(deadline)
    seconds = time.monotonic() - started

    runs = read_runs(redis_client)
    all_indexes = range(blocking_indexes.stop)
    counters = queue_counters(redis_client)
    report(
        "client kill",
        async_tasks=len(async_indexes),
        blocking_tasks=len(blocking_indexes),
        kill_rounds=rounds,
        connections_killed=killed,
        async_lost=len(load.outcomes.lost(async_indexes)),
        blocking_lost=len(callers.outcomes.lost(blocking_indexes)),
        errors=load.outcomes.error_types() | callers.outcomes.error_types(),
        never_ran=len(never_ran(runs, all_indexes)),
        ran_twice=len(ran_twice(runs)),
        counters=counters,
        seconds=round(seconds, 1),
    )

    assert killed >= 20
    assert load.outcomes.lost(async_indexes) == []
    assert callers.outcomes.lost(blocking_indexes) == []
    assert never_ran(runs, all_indexes) == []
    assert ran_twice(runs) == []
    assert counters.get("completed") == len(all_indexes)
    assert leftover_tasks(redis_client) == 0


# Proxy cuts and a stall

CUT_TASKS = 1000
CUT_TASK_SECONDS = 0.005
# The first fault round stalls every connection while all of them exist.
# Every later round cuts them.
STALL_ROUND = 1


@pytest.mark.e2e
@pytest.mark.slow
def test_proxy_cuts_lose_nothing(
    start_workers,
    conn_manager: MakeManager,
    redis_client: redis.Redis,
    proxies: Proxies,
) -> None:
    env = proxied_worker_env(proxies)
    workers = start_conn_workers(start_workers, redis_client, PROXY_WORKERS, env)
    # Each worker uses two connections (its loop and its heartbeat thread)
    # and the supervisor one, so later connections are reconnects.
    wait_until(lambda: proxies.workers.connection_count() == 2 * PROXY_WORKERS + 1)
    first_connections = proxies.workers.accepted
    producer = conn_manager(
        proxies.producer.url, block_timeout=BLOCK_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
    )
    indexes = range(CUT_TASKS)

    started = time.monotonic()
    load = AsyncLoad(producer, indexes, CUT_TASK_SECONDS).start()
    rounds = cut = stalled = 0
    # The wait is the fault cadence under test, not a wait for a state.
    while not load.finished.wait(FAULT_INTERVAL):
        rounds += 1
        for proxy in (proxies.workers, proxies.producer):
            if rounds == STALL_ROUND:
                stalled += proxy.stall(STALL_SECONDS)
            else:
                cut += proxy.cut()
    load.join()
    seconds = time.monotonic() - started

    runs = read_runs(redis_client)
    log = workers.log()
    reconnects = proxies.workers.accepted - first_connections
    logged = len(WORKER_PROBLEM_LINE.findall(log))
    delays = [delay for values in worker_delays(log).values() for delay in values]
    lost = load.outcomes.lost(indexes)
    report(
        "proxy cuts and a stall",
        tasks=len(indexes),
        fault_rounds=rounds,
        connections_cut=cut,
        connections_stalled=stalled,
        lost=len(lost),
        lost_with_stored_result=stored_results(
            redis_client, [load.futures[i] for i in lost if i in load.futures]
        ),
        errors=load.outcomes.error_types(),
        never_ran=len(never_ran(runs, indexes)),
        ran_twice=len(ran_twice(runs)),
        worker_reconnects=reconnects,
        worker_problems_logged=logged,
        worker_delays=delays,
        seconds=round(seconds, 1),
    )

    assert rounds > STALL_ROUND
    # The workers' five connections and at least one of the producer's.
    assert stalled >= 2 * PROXY_WORKERS + 2
    assert lost == []
    assert never_ran(runs, indexes) == []
    assert ran_twice(runs) == []
    assert leftover_tasks(redis_client) == 0
    assert max(delays, default=0.0) <= Backoff().cap


LOG_CUTS = 10


def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll condition until true or until timeout seconds passed, and return it."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.e2e
@pytest.mark.slow
def test_cut_reconnects_are_logged(
    start_workers, redis_client: redis.Redis, proxies: Proxies
) -> None:
    env = proxied_worker_env(proxies)
    workers = start_conn_workers(start_workers, redis_client, PROXY_WORKERS, env)
    wait_until(lambda: proxies.workers.connection_count() == 2 * PROXY_WORKERS + 1)
    first_connections = proxies.workers.accepted

    for _ in range(LOG_CUTS):
        # The wait is the fault cadence under test, not a wait for a state.
        time.sleep(FAULT_INTERVAL)
        proxies.workers.cut()
    # Idle workers reconnect within a block_timeout and a heartbeat interval.
    # The supervisor, idle too, does not reconnect until it needs Redis.
    wait_until(lambda: proxies.workers.connection_count() == 2 * PROXY_WORKERS)
    reconnects = proxies.workers.accepted - first_connections

    def logged() -> int:
        return len(WORKER_PROBLEM_LINE.findall(workers.log()))

    eventually(lambda: logged() >= reconnects)
    report(
        "reconnect logging",
        cuts=LOG_CUTS,
        worker_reconnects=reconnects,
        worker_problems_logged=logged(),
    )

    assert reconnects >= LOG_CUTS
    assert logged() >= reconnects


# An outage

OUTAGE_TASKS = 1000
OUTAGE_TASK_SECONDS = 0.01
# At OUTAGE_ROUND every connection is cut and new ones are reset for
# OUTAGE_SECONDS. That outlasts redis-py's own retries of a command, so the
# library's reconnect loops take over, and their backoff reaches its cap.
OUTAGE_ROUND = 3
OUTAGE_SECONDS = 12.0


@pytest.mark.e2e
@pytest.mark.slow
def test_outage_backoff_is_capped(
    start_workers,
    conn_manager: MakeManager,
    redis_client: redis.Redis,
    proxies: Proxies,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = proxied_worker_env(proxies)
    workers = start_conn_workers(start_workers, redis_client, PROXY_WORKERS, env)
    producer = conn_manager(
        proxies.producer.url, block_timeout=BLOCK_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
    )
    caplog.set_level(logging.ERROR, logger="tasker_redis")
    indexes = range(OUTAGE_TASKS)

    started = time.monotonic()
    load = AsyncLoad(producer, indexes, OUTAGE_TASK_SECONDS).start()
    rounds = cut = 0
    in_flight: set[str] = set()
    # The wait is the fault cadence under test, not a wait for a state.
    while not load.finished.wait(FAULT_INTERVAL):
        rounds += 1
        if rounds == OUTAGE_ROUND:
            for proxy in (proxies.workers, proxies.producer):
                proxy.reject(OUTAGE_SECONDS)
                cut += proxy.cut()
        elif rounds == OUTAGE_ROUND + 1:
            # These tasks were leased when the outage began. Their leases
            # expire during it, so only they may run twice.
            in_flight = {
                task.decode() for task in redis_client.zrange(KEYS.inflight, 0, -1)
            }
    load.join()
    seconds = time.monotonic() - started

    runs = read_runs(redis_client)
    twice = ran_twice(runs)
    twice_ids = {load.futures[i].task_id for i in twice}
    delays = worker_delays(workers.log())
    all_delays = [delay for values in delays.values() for delay in values]
    producer_side = producer_delays(caplog.records)
    cap = Backoff().cap
    ceilings = {min(cap, Backoff().base * 2**failures) for failures in range(10)}
    lost = load.outcomes.lost(indexes)
    report(
        "proxy outage",
        tasks=len(indexes),
        outage_seconds=OUTAGE_SECONDS,
        connections_cut=cut,
        lost=len(lost),
        errors=load.outcomes.error_types(),
        never_ran=len(never_ran(runs, indexes)),
        ran_twice=len(twice),
        in_flight_at_outage=len(in_flight),
        worker_delays=delays,
        producer_delays=producer_side,
        seconds=round(seconds, 1),
    )

    assert rounds > OUTAGE_ROUND + 1
    assert lost == []
    assert never_ran(runs, indexes) == []
    assert twice_ids <= in_flight
    assert leftover_tasks(redis_client) == 0
    # Every worker logged its reconnect attempts, and the delays grew to
    # the cap, stayed under it and were jittered.
    # NOTE: with Backoff(base=0.1, cap=5) the outage reaches about the 7th
    # failure in a row, whose uncapped delay would be 3.2 to 6.4 s, so a
    # missing cap fails this check only when that delay exceeds 5 s.
    assert len(delays) == PROXY_WORKERS
    assert max(all_delays) <= cap
    assert max(all_delays) >= cap / 2
    assert set(all_delays) - ceilings
    assert producer_side
    assert max(producer_side) <= cap


# Stalls of one side

STALL_TASKS = 1000
STALL_TASK_SECONDS = 0.01
# The fault rounds that stall every connection of one side.
STALL_ROUNDS = (3, 12, 21)


def run_with_stalls(load: AsyncLoad, proxy: TcpProxy) -> tuple[int, int]:
    """Stall the proxy's connections at STALL_ROUNDS until the load finishes.

    Returns:
        The fault rounds run and the connections stalled.
    """
    rounds = stalled = 0
    # The wait is the fault cadence under test, not a wait for a state.
    while not load.finished.wait(FAULT_INTERVAL):
        rounds += 1
        if rounds in STALL_ROUNDS:
            stalled += proxy.stall(STALL_SECONDS)
    load.join()
    return rounds, stalled


@pytest.mark.e2e
@pytest.mark.slow
def test_producer_stalls_lose_no_result(
    start_workers,
    conn_manager: MakeManager,
    redis_client: redis.Redis,
    proxies: Proxies,
) -> None:
    start_conn_workers(
        start_workers,
        redis_client,
        PROXY_WORKERS,
        {"CONN_BLOCK_TIMEOUT": str(BLOCK_TIMEOUT)},
    )
    producer = conn_manager(
        proxies.producer.url, block_timeout=BLOCK_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
    )
    indexes = range(STALL_TASKS)

    started = time.monotonic()
    load = AsyncLoad(producer, indexes, STALL_TASK_SECONDS).start()
    rounds, stalled = run_with_stalls(load, proxies.producer)
    seconds = time.monotonic() - started

    runs = read_runs(redis_client)
    lost = load.outcomes.lost(indexes)
    report(
        "producer stalls",
        tasks=len(indexes),
        stalls=len(STALL_ROUNDS),
        connections_stalled=stalled,
        lost=len(lost),
        lost_with_stored_result=stored_results(
            redis_client, [load.futures[i] for i in lost if i in load.futures]
        ),
        errors=load.outcomes.error_types(),
        never_ran=len(never_ran(runs, indexes)),
        ran_twice=len(ran_twice(runs)),
        seconds=round(seconds, 1),
    )

    assert rounds > max(STALL_ROUNDS)
    assert lost == []
    assert never_ran(runs, indexes) == []
    assert ran_twice(runs) == []


@pytest.mark.e2e
@pytest.mark.slow
def test_worker_stalls_count_no_crash(
    start_workers,
    conn_manager: MakeManager,
    redis_client: redis.Redis,
    proxies: Proxies,
) -> None:
    # With max_crashes 0 a task is dead-lettered the first time it is
    # recovered from an expired lease. No worker crashes here, and a stalled
    # worker records its 10 ms task on a new connection once socket_timeout
    # (1.5 s) passes, inside the 3 s lease, so no task may be dead-lettered.
    env = proxied_worker_env(proxies, CONN_MAX_CRASHES="0")
    start_conn_workers(start_workers, redis_client, PROXY_WORKERS, env)
    producer = conn_manager(max_crashes=0)
    indexes = range(STALL_TASKS)

    started = time.monotonic()
    load = AsyncLoad(producer, indexes, STALL_TASK_SECONDS).start()
    rounds, stalled = run_with_stalls(load, proxies.workers)
    seconds = time.monotonic() - started

    runs = read_runs(redis_client)
    counters = queue_counters(redis_client)
    report(
        "worker stalls, max_crashes 0",
        tasks=len(indexes),
        stalls=len(STALL_ROUNDS),
        connections_stalled=stalled,
        lost=len(load.outcomes.lost(indexes)),
        errors=load.outcomes.error_types(),
        never_ran=len(never_ran(runs, indexes)),
        ran_twice=len(ran_twice(runs)),
        counters=counters,
        seconds=round(seconds, 1),
    )

    assert rounds > max(STALL_ROUNDS)
    assert load.outcomes.errors == {}
    assert load.outcomes.lost(indexes) == []
    assert counters.get("dead_lettered", 0) == 0
    assert ran_twice(runs) == []


# Blocking calls and the socket timeout


@pytest.mark.parametrize(("block_timeout", "socket_timeout"), [(1, 1), (2.0, 1.5)])
def test_config_rejects_short_socket_timeout(
    block_timeout: float, socket_timeout: float
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(
            on_create=conn_tasks.create_counter,
            on_destroy=conn_tasks.close_counter,
            redis_url="redis://127.0.0.1:1/0",
            block_timeout=block_timeout,
            socket_timeout=socket_timeout,
        )

    message = str(caught.value)
    assert f"socket_timeout ({socket_timeout!r})" in message
    assert f"block_timeout ({block_timeout!r})" in message


def test_blocking_call_within_socket_timeout(redis_url: str) -> None:
    config = conn_tasks.make_config(redis_url, block_timeout=1, socket_timeout=1.5)
    client = create_client(config)

    assert client.blpop(["empty"], timeout=config.block_timeout) is None
    client.close()


LONG_TASK_SECONDS = 5.0


@pytest.mark.e2e
@pytest.mark.slow
def test_result_wait_outlasts_socket_timeout(
    start_workers,
    conn_manager: MakeManager,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"CONN_BLOCK_TIMEOUT": "1", "CONN_SOCKET_TIMEOUT": "1.5"}
    workers = start_conn_workers(start_workers, redis_client, 1, env)
    producer = conn_manager(block_timeout=1, socket_timeout=1.5)
    # Another manager has no future for the task, so it waits on the result
    # key with blocking calls on its own connection.
    waiter = conn_manager(block_timeout=1, socket_timeout=1.5)
    caplog.set_level(logging.WARNING, logger="tasker_redis")

    started = time.monotonic()
    future = producer.queue_task_async(conn_tasks.count, 7, LONG_TASK_SECONDS)
    value = waiter.result(future.task_id, timeout=10)
    seconds = time.monotonic() - started

    assert value == 7
    assert seconds >= LONG_TASK_SECONDS
    assert future.result(timeout=10) == 7
    assert caplog.records == []
    assert "lost the Redis connection" not in workers.log()
