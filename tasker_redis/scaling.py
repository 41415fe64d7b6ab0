"""Burst scaling: when to add or retire worker processes beyond the base count."""

from __future__ import annotations

from dataclasses import dataclass

from tasker_redis.scripts import QueueCounts

# Counters that grow by one for each task that leaves the queue for good.
FINISHED_COUNTERS = ("completed", "failed", "lost", "dead_lettered")


@dataclass(frozen=True)
class ScalingDecision:
    """The supervisor's action after one look at the queue, and its reasons.

    Attributes:
        change: +1 to add a burst worker, -1 to retire one, 0 to do nothing.
        backlog: Tasks waiting in both queues.
        arrival_rate: Tasks queued per second since the previous look.
        completion_rate: Tasks finished per second since the previous look.
    """

    change: int
    backlog: int
    arrival_rate: float
    completion_rate: float


class BurstScaler:
    """Decides, every burst_interval, whether to grow or shrink the worker pool.

    The pool grows by one worker per look, up to max_workers, while tasks
    wait and either arrive faster than they finish, or more wait than the
    workers finished during the last interval, so the backlog would outlast
    the next look. It shrinks by one burst worker per look, down to
    base_workers, while nothing waits and fewer tasks run than there are
    workers. Rates come from the queue's lifetime counters, so they cover the
    tasks of every worker process on every machine.
    """

    def __init__(self, base_workers: int, max_workers: int) -> None:
        self.base_workers = base_workers
        self.max_workers = max_workers
        self._previous: tuple[float, int, int] | None = None

    def decide(self, now: float, counts: QueueCounts, workers: int) -> ScalingDecision:
        """Return the decision for counts read at monotonic time now."""
        backlog = counts.normal + counts.high
        queued = counts.counters.get("queued", 0)
        finished = sum(counts.counters.get(name, 0) for name in FINISHED_COUNTERS)
        previous = self._previous
        self._previous = (now, queued, finished)
        arrival_rate = completion_rate = 0.0
        if previous is not None and now > previous[0]:
            elapsed = now - previous[0]
            arrival_rate = max(0, queued - previous[1]) / elapsed
            completion_rate = max(0, finished - previous[2]) / elapsed
            interval_finished = finished - previous[2]
        else:
            interval_finished = 0

        outpaced = arrival_rate > completion_rate or backlog > interval_finished
        change = 0
        if backlog > 0 and outpaced and workers < self.max_workers:
            change = 1
        elif (
            backlog == 0 and counts.in_flight < workers and workers > self.base_workers
        ):
            change = -1
        return ScalingDecision(change, backlog, arrival_rate, completion_rate)
