"""The `tasker` click group and its commands."""

from __future__ import annotations

import logging
import sys

import click

from tasker_redis import TaskerError, __version__
from tasker_redis.supervisor import Supervisor

from .options import apply_overrides, connection_options, load_config

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
)


@click.group()
@click.version_option(__version__, prog_name="tasker-redis")
def cli() -> None:
    """Run and inspect tasker-redis task queues."""


@cli.command()
@click.argument("spec", metavar="MODULE:ATTRIBUTE")
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes to run; overrides the Config's worker_count.",
)
@connection_options
@click.option(
    "--verbose", "-v", is_flag=True, help="Log at DEBUG, with task arguments."
)
def worker(
    spec: str,
    workers: int | None,
    redis_url: str | None,
    queue: str | None,
    verbose: bool,
) -> None:
    """Run worker processes for the Config at MODULE:ATTRIBUTE.

    Importing MODULE registers its tasks. Each worker process creates its
    own resource with the Config's on_create and runs one task at a time,
    high priority first. SIGTERM or Ctrl-C stops after running tasks finish;
    a second one stops at once and puts running tasks back on the queue.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT
    )
    try:
        config = apply_overrides(
            load_config(spec), worker_count=workers, redis_url=redis_url, queue=queue
        )
        code = Supervisor(config).run()
    except TaskerError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def main() -> None:
    """Run the `tasker` command."""
    cli()
