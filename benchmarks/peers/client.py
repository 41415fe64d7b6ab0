"""The client side of one setup, run by the harness in a process of its own.

A client that hangs (a deadlock in a system's client library, a lost
result) can then be killed by pid without taking the harness down, and no
system's imports or global state leak into the next one. The figures go
to a JSON file, which the harness reads.

Usage: python -m benchmarks.peers.client KEY SETUP_INDEX OUTPUT_JSON
    --tasks N --round-trips N --sleep-tasks N --warmup N
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.peers.base import (
    NOOP,
    PAYLOAD,
    SLEEP,
    Adapter,
    AdapterUnavailable,
    redis_url,
)

# Command-line name of each adapter, in report order, and its class.
ADAPTERS = {
    "bare": "benchmarks.peers.bare_adapter:BareAdapter",
    "tasker": "benchmarks.peers.tasker_adapter:TaskerAdapter",
    "rq": "benchmarks.peers.rq_adapter:RqAdapter",
    "rq-simple": "benchmarks.peers.rq_adapter:RqSimpleAdapter",
    "arq": "benchmarks.peers.arq_adapter:ArqAdapter",
    "saq": "benchmarks.peers.saq_adapter:SaqAdapter",
    "dramatiq": "benchmarks.peers.dramatiq_adapter:DramatiqAdapter",
    "celery": "benchmarks.peers.celery_adapter:CeleryAdapter",
    "huey": "benchmarks.peers.huey_adapter:HueyAdapter",
    "taskiq-list": "benchmarks.peers.taskiq_adapter:TaskiqListAdapter",
    "taskiq-stream": "benchmarks.peers.taskiq_adapter:TaskiqStreamAdapter",
}

# Seconds a worker may take to start and run its first task.
START_TIMEOUT = 60.0
# Seconds one throughput run or one series of round trips may take.
PHASE_TIMEOUT = 180.0


def load_adapter(key: str) -> Adapter:
    """Import and create an adapter.

    Raises:
        AdapterUnavailable: Its system is not installed.
    """
    module_name, _, class_name = ADAPTERS[key].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AdapterUnavailable(f"cannot import it: {exc}") from exc
    adapter: Adapter = getattr(module, class_name)()
    return adapter


def percentile(samples: list[float], fraction: float) -> float:
    """Return the sample at the fraction's rank (nearest rank, no interpolation)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def latency_ms(samples: list[float]) -> list[float]:
    """Return p50, p95 and p99 of samples in seconds, as milliseconds."""
    return [percentile(samples, q) * 1000 for q in (0.5, 0.95, 0.99)]


def throughput(adapter: Adapter, workload: str, count: int) -> tuple[float, float]:
    """Queue count tasks, wait for every result; return (enqueue rate, throughput)."""
    started = time.perf_counter()
    handles = adapter.enqueue(workload, count)
    queued = time.perf_counter()
    adapter.wait(workload, handles, PHASE_TIMEOUT)
    finished = time.perf_counter()
    return count / (queued - started), count / (finished - started)


def measure(adapter: Adapter, concurrency: int, arguments: Any) -> dict[str, Any]:
    """Run every workload against the started worker and return the figures."""
    figures: dict[str, Any] = {}
    adapter.result(adapter.submit(NOOP), START_TIMEOUT)
    adapter.round_trips(NOOP, arguments.warmup, PHASE_TIMEOUT)

    samples = adapter.round_trips(NOOP, arguments.round_trips, PHASE_TIMEOUT)
    figures["latency"] = latency_ms(samples)
    figures["enqueue_rate"], figures["throughput"] = throughput(
        adapter, NOOP, arguments.tasks
    )
    samples = adapter.round_trips(PAYLOAD, arguments.round_trips, PHASE_TIMEOUT)
    figures["payload_latency"] = latency_ms(samples)
    _, figures["payload_throughput"] = throughput(adapter, PAYLOAD, arguments.tasks)
    if concurrency > 1:
        _, figures["sleep_throughput"] = throughput(
            adapter, SLEEP, arguments.sleep_tasks
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key", choices=list(ADAPTERS))
    parser.add_argument("setup", type=int, help="index in the adapter's setups()")
    parser.add_argument("output", type=Path, help="JSON file for the figures")
    for option in ("--tasks", "--round-trips", "--sleep-tasks", "--warmup"):
        parser.add_argument(option, type=int, required=True)
    arguments = parser.parse_args()

    outcome: dict[str, Any]
    try:
        adapter = load_adapter(arguments.key)
        setup = adapter.setups()[arguments.setup]
        adapter.open(redis_url())
        try:
            outcome = measure(adapter, setup.concurrency, arguments)
        finally:
            adapter.close()
    except AdapterUnavailable as exc:
        outcome = {"status": "skipped", "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    arguments.output.write_text(json.dumps(outcome))
    sys.exit(0 if "error" not in outcome else 1)


if __name__ == "__main__":
    main()
