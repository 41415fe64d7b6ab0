"""Helpers for tests that wait on state in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def wait_until(
    condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.02
) -> None:
    """Poll condition until it returns a true value; fail the test after timeout.

    Used only for state that no event announces, such as a worker's
    heartbeat appearing in Redis.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)
