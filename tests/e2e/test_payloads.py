"""Payloads from 0 bytes to 50 MB through a real worker and Redis."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apps import payload_tasks

from tasker_redis import SerializationError, TaskManager

pytestmark = pytest.mark.e2e

SIZES = [0, 1, 1024, 1024 * 1024, 50 * 1000 * 1000]


@pytest.fixture
def manager(redis_url: str, start_workers: Callable[..., Any]) -> Iterator[TaskManager]:
    start_workers("apps.payload_tasks:config")
    manager = TaskManager(
        dataclasses.replace(payload_tasks.config(), redis_url=redis_url)
    )
    yield manager
    manager.kill()


@pytest.mark.parametrize("size", SIZES)
def test_bytes_payload_round_trips(manager: TaskManager, size: int) -> None:
    payload = os.urandom(size)

    result = manager.submit(payload_tasks.echo, (payload,)).result(timeout=60)

    assert type(result) is bytes
    assert len(result) == size
    assert result == payload


def test_str_payload_round_trips(manager: TaskManager) -> None:
    payload = "ü€\U0001f600\x00" * 1_000_000

    result = manager.queue_task(payload_tasks.echo, payload)

    assert type(result) is str
    assert result == payload


def test_payload_over_limit_rejected(redis_url: str) -> None:
    config = dataclasses.replace(
        payload_tasks.config(), redis_url=redis_url, max_payload_size=1000
    )
    with TaskManager(config) as manager, pytest.raises(SerializationError) as caught:
        manager.submit(payload_tasks.echo, (b"x" * 1001,))

    assert "max_payload_size (1000)" in str(caught.value)
