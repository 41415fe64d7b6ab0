"""Names of every Redis key that one queue uses."""

from __future__ import annotations

# Suffixes of the keys with fixed names, after the queue prefix. The Lua
# scripts receive only the prefix and name these keys from this same table.
FIXED_KEY_SUFFIXES = {
    # Lists of task ids. Producers LPUSH and workers RPOP, so each is FIFO.
    "high": "queue:high",
    "normal": "queue:normal",
    # One token per queued task; idle workers block on it.
    "wake": "wake",
    # Hash of task id to the encoded task message.
    "tasks": "tasks",
    # Sorted set of claimed task ids scored by lease deadline (ms, server time).
    "inflight": "inflight",
    # Hash of claimed task id to "<fencing token>:<worker id>", and the
    # counter that issues fencing tokens.
    "claims": "claims",
    "fence": "fence",
    # Hashes of task id to the number of retries and crash re-deliveries.
    "retries": "retries",
    "crashes": "crashes",
    # Set of ids of at-most-once tasks still queued or running.
    "once": "once",
    # Hash of worker id to the number of its latest claim or finish call.
    "calls": "calls",
    # List of encoded dead-letter entries, newest first.
    "dead": "dead",
    # Sorted set of worker id scored by its last heartbeat (ms, server time).
    "workers": "workers",
    # Hash of counters: completed, failed, retried, dead_lettered, lost.
    "counters": "counters",
}


# Metrics live in one hash per METRICS_SLOT_MS of server time, named
# "metrics:<slot number>", kept for a 60 s sliding window plus two slots.
METRICS_SLOT_MS = 5_000
METRICS_WINDOW_MS = 60_000
METRICS_TTL_MS = METRICS_WINDOW_MS + 2 * METRICS_SLOT_MS


class QueueKeys:
    """Redis key names for one queue.

    Every key starts with the prefix `tasker:{<queue>}:`. The braces are a
    Redis Cluster hash tag: they put all keys of a queue in one hash slot,
    which the Lua scripts need because each touches several of them.
    """

    high: str
    normal: str
    wake: str
    tasks: str
    inflight: str
    claims: str
    fence: str
    retries: str
    crashes: str
    once: str
    calls: str
    dead: str
    workers: str
    counters: str

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.prefix = f"tasker:{{{queue}}}:"
        for name, suffix in FIXED_KEY_SUFFIXES.items():
            setattr(self, name, self.prefix + suffix)

    def result(self, task_id: str) -> str:
        """Return the key of the list that contains the result of one task."""
        return f"{self.prefix}result:{task_id}"

    def inbox(self, manager_id: str) -> str:
        """Return the key of the list where workers push results for one manager."""
        return f"{self.prefix}inbox:{manager_id}"

    def metrics(self, slot: int) -> str:
        """Return the key of the metrics hash of one time slot."""
        return f"{self.prefix}metrics:{slot}"

    def is_inbox(self, key: str | None) -> bool:
        """Return True for None or a key that inbox() could have returned."""
        return key is None or (
            key.startswith(self.prefix + "inbox:") and len(key) > len(self.prefix) + 6
        )

    def worker_info(self, worker_id: str) -> str:
        """Return the key of the hash that describes one worker process."""
        return f"{self.prefix}worker:{worker_id}"
