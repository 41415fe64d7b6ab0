"""TaskStats: a snapshot of a queue's depth, workers and counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskStats:
    """Live state of one queue, read from Redis in one round trip.

    Attributes:
        queued_tasks: Tasks waiting in the normal queue.
        priority_tasks: Tasks waiting in the high-priority queue.
        in_flight_tasks: Tasks leased to workers and not finished.
        active_workers: Workers, one per thread of each worker process,
            whose heartbeat Redis received within the last lease_timeout,
            on every machine.
        available_resources: Idle resources in this process's run_task pool.
        dead_letter_tasks: Entries in the dead-letter list.
        completed_tasks: Tasks that returned a value, since the queue was new.
        failed_tasks: Tasks that ended with an error, since the queue was new.
        retried_tasks: Retries after unhealthy failures, since the queue was new.
    """

    queued_tasks: int
    priority_tasks: int
    in_flight_tasks: int
    active_workers: int
    available_resources: int
    dead_letter_tasks: int
    completed_tasks: int
    failed_tasks: int
    retried_tasks: int
