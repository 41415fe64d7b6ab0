"""The `tasker` click group and its commands."""

from __future__ import annotations

import click

from tasker_redis import __version__

from .dead_letter import dead_letter
from .enqueue import enqueue
from .purge import purge
from .stats import stats
from .worker import worker


@click.group()
@click.version_option(__version__, prog_name="tasker-redis")
def cli() -> None:
    """Run and inspect tasker-redis task queues."""


cli.add_command(worker)
cli.add_command(stats)
cli.add_command(enqueue)
cli.add_command(dead_letter)
cli.add_command(purge)


def main() -> None:
    """Run the `tasker` command."""
    cli()
