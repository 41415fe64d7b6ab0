"""A file_stats.measure task that returns wrong stats, so every check fails."""

from __future__ import annotations

import os
from typing import Any

from tasker_redis import Config, TaskContext, task


@task(name="file_stats.measure")
def measure(ctx: TaskContext, resource: object, path: str) -> dict[str, Any]:
    return {
        "sha256": "0" * 64,
        "size": -1,
        "binary": False,
        "lines": 0,
        "words": 0,
        "worker": ctx.worker_id,
    }


def release(resource: object) -> None:
    pass


config = Config(
    on_create=object,
    on_destroy=release,
    queue=os.environ.get("FILE_STATS_QUEUE", "file-stats"),
)
