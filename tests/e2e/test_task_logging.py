"""The per-task log lines of a real worker process."""

from __future__ import annotations

from typing import Any

import pytest
from apps import log_stall_tasks
from helpers import wait_until

from tasker_redis import TaskManager

pytestmark = pytest.mark.e2e

SPEC = "apps.log_stall_tasks:config"


def test_stalled_log_handler_holds_no_task(redis_url: str, start_workers: Any) -> None:
    # The first task's line blocks the log handler for three leases. The
    # second task, queued meanwhile, must run at once and only once. Held
    # unseen through the stall, it would lose its lease and, being
    # at-most-once, be reported lost.
    stall = 3 * log_stall_tasks.LEASE_TIMEOUT
    worker = start_workers(SPEC, env={log_stall_tasks.STALL_SECONDS_ENV: str(stall)})
    with TaskManager(log_stall_tasks.build_config(redis_url)) as manager:
        wait_until(lambda: manager.stats().active_workers == 1)

        assert manager.queue_task_once(log_stall_tasks.echo, 1) == 1
        assert manager.queue_task_once(log_stall_tasks.echo, 2) == 2
        stats = manager.stats()

    assert stats.completed_tasks == 2
    assert stats.failed_tasks == 0
    # Both lines are written once the handler is free again.
    wait_until(lambda: worker.log().count("log-stall.echo completed in") == 2)
