"""Tasks and Config for the benchmarks: a no-op task and a trivial resource."""

from __future__ import annotations

import os

from tasker_redis import Config, TaskContext, task


class Resource:
    """Stands in for a connection: nothing to open or close."""

    def close(self) -> None:
        pass


@task(name="bench.noop")
def noop(ctx: TaskContext, resource: Resource) -> None:
    return None


def make_config() -> Config:
    return Config(
        on_create=Resource,
        on_destroy=Resource.close,
        redis_url=os.environ["TASKER_REDIS_URL"],
        queue="bench",
    )


config = make_config
