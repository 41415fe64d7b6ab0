"""Tasks and Config for the soak benchmark: a no-op task and a failing task."""

from __future__ import annotations

import os

from tasker_redis import Config, TaskContext, task


class Resource:
    """Stands in for a connection: nothing to open or close."""

    def close(self) -> None:
        pass


@task(name="soak.noop")
def noop(ctx: TaskContext, resource: Resource) -> None:
    return None


@task(name="soak.fail")
def fail(ctx: TaskContext, resource: Resource) -> None:
    raise ValueError("this task always fails")


def make_config() -> Config:
    return Config(
        on_create=Resource,
        on_destroy=Resource.close,
        redis_url=os.environ["TASKER_REDIS_URL"],
        queue="soak",
        result_ttl=float(os.environ.get("SOAK_RESULT_TTL", "5")),
    )


config = make_config
