"""An echo task for the payload size tests; the queue comes from PAYLOAD_QUEUE."""

from __future__ import annotations

import os
from typing import Any

from tasker_redis import Config, TaskContext, task


class Resource:
    """A resource with nothing to open or close."""

    def close(self) -> None:
        pass


@task(name="payloads.echo")
def echo(ctx: TaskContext, resource: Resource, value: Any) -> Any:
    return value


def config() -> Config:
    return Config(
        on_create=Resource,
        on_destroy=Resource.close,
        queue=os.environ.get("PAYLOAD_QUEUE", "payloads"),
        block_timeout=0.2,
    )
