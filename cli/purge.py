"""The `tasker purge` command: delete the tasks waiting in a queue."""

from __future__ import annotations

import click

from .connect import open_admin
from .formatting import count_of
from .options import connection_options


@click.command()
@connection_options
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
def purge(redis_url: str | None, queue: str | None, yes: bool) -> None:
    """Delete every task waiting in the queue, after confirmation.

    Both priorities are emptied, oldest tasks first, in batches that leave
    Redis free for workers in between. The purge stops after as many tasks
    as were waiting when it began, so most tasks queued meanwhile survive.
    Tasks in flight keep running and report their results. A producer
    waiting for the result of a deleted task waits until its own timeout,
    since no result is written.
    """
    with open_admin(redis_url, queue) as admin:
        name = admin.keys.queue
        counts = admin.counts()
        waiting = counts.high + counts.normal
        if waiting == 0:
            click.echo(f"no tasks waiting in queue {name!r}")
            return
        if not yes:
            tasks = count_of(waiting, "waiting task", "waiting tasks")
            click.confirm(
                f"Delete {tasks} of queue {name!r}? Tasks in flight keep running.",
                abort=True,
                err=True,
            )
        deleted = admin.purge_queue()
    tasks = count_of(deleted, "waiting task", "waiting tasks")
    click.echo(f"deleted {tasks} from queue {name!r}")
