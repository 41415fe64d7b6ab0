"""Unit tests of the burst scaling decision."""

from __future__ import annotations

from tasker_redis.scaling import BurstScaler
from tasker_redis.scripts import QueueCounts


def counts(
    *,
    normal: int = 0,
    high: int = 0,
    in_flight: int = 0,
    queued: int = 0,
    done: int = 0,
) -> QueueCounts:
    return QueueCounts(
        normal=normal,
        high=high,
        in_flight=in_flight,
        workers_alive=0,
        dead_letters=0,
        counters={"queued": queued, "completed": done},
    )


def test_first_look_with_backlog_adds() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)

    decision = scaler.decide(0.0, counts(normal=5, queued=5), workers=1)

    assert decision.change == 1
    assert decision.backlog == 5


def test_backlog_outlasting_interval_adds() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)
    scaler.decide(0.0, counts(normal=10, queued=10), workers=1)

    decision = scaler.decide(1.0, counts(normal=8, queued=10, done=2), workers=2)

    assert decision.change == 1
    assert decision.completion_rate == 2.0
    assert decision.arrival_rate == 0.0


def test_backlog_draining_in_time_holds() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)
    scaler.decide(0.0, counts(normal=10, queued=10), workers=2)

    decision = scaler.decide(1.0, counts(normal=2, queued=10, done=8), workers=2)

    assert decision.change == 0


def test_arrivals_outpacing_completions_add() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)
    scaler.decide(0.0, counts(normal=0, queued=0), workers=1)

    decision = scaler.decide(1.0, counts(normal=1, queued=10, done=9), workers=1)

    assert decision.change == 1
    assert decision.arrival_rate == 10.0


def test_max_workers_caps_growth() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)

    decision = scaler.decide(0.0, counts(normal=50, queued=50), workers=3)

    assert decision.change == 0


def test_empty_queue_with_idle_worker_retires() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)

    decision = scaler.decide(0.0, counts(in_flight=1, queued=5, done=4), workers=3)

    assert decision.change == -1


def test_busy_workers_are_kept() -> None:
    scaler = BurstScaler(base_workers=1, max_workers=3)

    decision = scaler.decide(0.0, counts(in_flight=3), workers=3)

    assert decision.change == 0


def test_base_workers_never_retired() -> None:
    scaler = BurstScaler(base_workers=2, max_workers=3)

    decision = scaler.decide(0.0, counts(), workers=2)

    assert decision.change == 0
