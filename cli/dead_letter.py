"""The `tasker dead-letter` commands: list, show, retry and purge entries."""

from __future__ import annotations

import json
from typing import Any

import click

from tasker_redis.admin import DeadLetterEntry, preview

from .connect import open_admin
from .formatting import (
    count_of,
    format_table,
    format_timestamp,
    shorten,
    to_json_value,
)
from .options import connection_options

# Characters of the arguments and of the reason in one row of the list.
ARGS_WIDTH = 30
REASON_WIDTH = 60

# Characters of the arguments and of an undecodable message that show prints.
SHOW_PREVIEW = 2000

UNDECODABLE = "(undecodable)"


@click.group("dead-letter")
def dead_letter() -> None:
    """List, show, retry and purge the entries of a queue's dead-letter list.

    A worker moves a task there when its message does not decode, when no
    worker registers its name, or when it crashed its worker more than
    max_crashes times. Its producer gets TaskDeadLettered or
    TaskNotRegistered. ID is the task id, as `tasker dead-letter list`
    prints it.
    """


@dead_letter.command("list")
@connection_options
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="Entries to list, newest first; 0 lists all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_entries(
    redis_url: str | None, queue: str | None, limit: int, as_json: bool
) -> None:
    """List dead-letter entries, newest first."""
    with open_admin(redis_url, queue) as admin:
        total = admin.counts().dead_letters
        entries = admin.dead_letters(limit or None)
    if as_json:
        click.echo(json.dumps([_entry_json(entry) for entry in entries]))
        return
    if not entries:
        click.echo(f"no dead-letter entries in queue {admin.keys.queue!r}")
        return
    rows = [_entry_row(entry) for entry in entries]
    click.echo(format_table(("TASK ID", "TASK", "ARGS", "FAILED AT", "REASON"), rows))
    if len(entries) < total:
        click.echo(
            f"showing {len(entries)} of {total} entries; pass --limit 0 to list all"
        )


@dead_letter.command("show")
@click.argument("task_id", metavar="ID")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
def show(task_id: str, redis_url: str | None, queue: str | None, as_json: bool) -> None:
    """Show the dead-letter entry of task ID, with its arguments and reason."""
    with open_admin(redis_url, queue) as admin:
        entry = admin.dead_letter(task_id)
    if as_json:
        click.echo(json.dumps(_entry_json(entry)))
        return
    click.echo(_entry_text(entry))


@dead_letter.command("retry")
@click.argument("task_id", metavar="[ID]", required=False)
@connection_options
@click.option("--all", "retry_all", is_flag=True, help="Retry every entry.")
def retry(
    task_id: str | None, redis_url: str | None, queue: str | None, retry_all: bool
) -> None:
    """Queue the task of entry ID again, or with --all of every entry.

    The task keeps its id, arguments and priority. The entry leaves the list
    in the same step, so running this twice queues the task once. An entry
    whose message does not decode cannot be retried and stays in the list.
    """
    if retry_all == (task_id is not None):
        raise click.UsageError("pass either an entry ID or --all")
    with open_admin(redis_url, queue) as admin:
        if task_id is not None:
            click.echo(_requeued_line(admin.retry_dead_letter(task_id)))
            return
        report = admin.retry_all_dead_letters()

    for entry in report.requeued:
        click.echo(_requeued_line(entry))
    for entry, reason in report.skipped:
        name = entry.task_id or UNDECODABLE
        click.echo(f"skipped dead-letter entry {name}: {reason}", err=True)
    if report.skipped:
        raise click.ClickException(
            f"{count_of(len(report.skipped), 'entry', 'entries')} could not be "
            f"retried and stayed in the list; queued "
            f"{count_of(len(report.requeued), 'task', 'tasks')} again"
        )
    if not report.requeued:
        click.echo(f"no dead-letter entries in queue {admin.keys.queue!r}")


@dead_letter.command("purge")
@connection_options
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
def purge(redis_url: str | None, queue: str | None, yes: bool) -> None:
    """Delete every dead-letter entry of the queue, after confirmation."""
    with open_admin(redis_url, queue) as admin:
        name = admin.keys.queue
        total = admin.counts().dead_letters
        if total == 0:
            click.echo(f"no dead-letter entries in queue {name!r}")
            return
        if not yes:
            entries = count_of(total, "dead-letter entry", "dead-letter entries")
            click.confirm(f"Delete {entries} of queue {name!r}?", abort=True, err=True)
        deleted = admin.purge_dead_letters()
    entries = count_of(deleted, "dead-letter entry", "dead-letter entries")
    click.echo(f"deleted {entries} from queue {name!r}")


def _priority(entry: DeadLetterEntry) -> str:
    return "high" if entry.message is not None and entry.message.priority else "normal"


def _requeued_line(entry: DeadLetterEntry) -> str:
    return (
        f"queued task {entry.task_id} ({entry.task_name}) again at "
        f"{_priority(entry)} priority"
    )


def _entry_row(entry: DeadLetterEntry) -> list[str]:
    letter, message = entry.letter, entry.message
    if letter is None:
        return [UNDECODABLE, "", "", "", shorten(entry.error, REASON_WIDTH)]
    args = preview(message.args, ARGS_WIDTH) if message is not None else ""
    return [
        letter.task_id,
        entry.task_name or UNDECODABLE,
        args,
        format_timestamp(letter.failed_at),
        shorten(letter.reason, REASON_WIDTH),
    ]


def _entry_text(entry: DeadLetterEntry) -> str:
    letter, message = entry.letter, entry.message
    assert letter is not None  # dead_letter() finds entries by their id
    fields = [("task id", letter.task_id)]
    if message is not None:
        fields += [
            ("task", message.name),
            ("arguments", preview(message.args, SHOW_PREVIEW)),
            ("kwargs", preview(message.kwargs, SHOW_PREVIEW)),
            ("priority", _priority(entry)),
            ("at most once", "yes" if message.once else "no"),
            ("task timeout", f"{message.timeout:g} s" if message.timeout else "none"),
            ("queued at", format_timestamp(message.enqueued_at)),
        ]
    else:
        fields += [
            ("message", f"{entry.error}; this entry cannot be retried"),
            ("raw message", preview(letter.message, SHOW_PREVIEW)),
        ]
    worker = f" by {letter.worker_id}" if letter.worker_id else ""
    fields += [
        ("failed at", format_timestamp(letter.failed_at) + worker),
        ("reason", letter.reason),
    ]
    width = max(len(label) for label, _ in fields)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in fields)


def _entry_json(entry: DeadLetterEntry) -> dict[str, Any]:
    letter, message = entry.letter, entry.message
    return {
        "task_id": entry.task_id or None,
        "task": entry.task_name or None,
        "args": to_json_value(message.args) if message is not None else None,
        "kwargs": to_json_value(message.kwargs) if message is not None else None,
        "priority": _priority(entry) if message is not None else None,
        "once": message.once if message is not None else None,
        "enqueued_at": message.enqueued_at if message is not None else None,
        "reason": letter.reason if letter is not None else None,
        "worker": letter.worker_id if letter is not None else None,
        "failed_at": letter.failed_at if letter is not None else None,
        "error": entry.error or None,
    }
