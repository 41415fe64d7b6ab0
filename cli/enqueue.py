"""The `tasker enqueue` command: queue tasks by name from the shell."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click

from tasker_redis.admin import QueueAdmin
from tasker_redis.results import error_from_result

from .connect import open_admin
from .formatting import dump_json
from .options import connection_options

# A batch read with --stdin shows a progress bar on a terminal from this size.
PROGRESS_MIN_TASKS = 1000


@click.command()
@click.argument("task_name")
@click.argument("args", nargs=-1)
@connection_options
@click.option(
    "--kwargs",
    "kwargs_json",
    metavar="JSON",
    default=None,
    help="Keyword arguments as a JSON object, e.g. '{\"scale\": 2}'.",
)
@click.option("--priority", is_flag=True, help="Queue on the high-priority queue.")
@click.option(
    "--once",
    is_flag=True,
    help="Deliver at most once: never retried, and failed rather than run again "
    "if its worker dies.",
)
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Seconds the task may run on a worker before it fails with "
    "TaskTimeout; overrides the task's own timeout.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the result and print it as JSON; exit 1 if the task fails.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="With --wait, seconds to wait for the result before exiting 1; the "
    "task is not cancelled.",
)
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read one task per line from standard input, each a JSON array of "
    "arguments, and queue them in pipelined batches.",
)
def enqueue(
    task_name: str,
    args: tuple[str, ...],
    *,
    redis_url: str | None,
    queue: str | None,
    kwargs_json: str | None,
    priority: bool,
    once: bool,
    task_timeout: float | None,
    wait: bool,
    timeout: float | None,
    from_stdin: bool,
) -> None:
    """Queue the task registered as TASK_NAME, with ARGS as JSON values.

    Prints the id of each queued task, or with --wait the result as JSON:
    one line per task, and with --stdin one JSON object per task with its
    "task_id" and its "result" or "error". Workers look the name up in their
    own registry, so a name no worker has is dead-lettered there.

    \b
    Examples:
      tasker enqueue calc.multiply 6 7
      tasker enqueue greet '"Ada"' --kwargs '{"polite": true}' --wait
      printf '[1, 2]\\n[3, 4]\\n' | tasker enqueue calc.multiply --stdin

    Arguments that start with a dash go after --, and options before it:
    tasker enqueue calc.add --wait -- -1 2.
    """
    if from_stdin and args:
        raise click.UsageError(
            "pass arguments either as ARGS or with --stdin, not both"
        )
    if timeout is not None and not wait:
        raise click.UsageError("--timeout applies only with --wait; add --wait")
    kwargs = _parse_kwargs(kwargs_json)
    if from_stdin:
        arguments = _read_lines(sys.stdin)
    else:
        arguments = [[_parse_argument(text, index) for index, text in enumerate(args)]]

    with open_admin(redis_url, queue) as admin:
        with _progress(len(arguments)) as progress:
            task_ids = admin.queue_tasks(
                task_name,
                arguments,
                kwargs,
                high_priority=priority,
                once=once,
                timeout=task_timeout,
                progress=progress,
            )
        if not wait:
            for task_id in task_ids:
                click.echo(task_id)
        elif from_stdin:
            _wait_for_batch(admin, task_ids, timeout)
        else:
            _wait_for_one(admin, task_ids[0], timeout)


def _parse_argument(text: str, index: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"argument {index + 1}, {text!r}, is not a JSON value ({exc.msg}); "
            f"write strings in JSON quotes, as in '{json.dumps(text)}'",
            param_hint="'ARGS'",
        ) from None


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{text!r} is not valid JSON ({exc.msg}); pass an object such as "
            "'{\"scale\": 2}'",
            param_hint="'--kwargs'",
        ) from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"{text!r} is a JSON {type(value).__name__}, not an object; pass an "
            "object such as '{\"scale\": 2}'",
            param_hint="'--kwargs'",
        )
    return value


def _read_lines(stream: TextIO) -> list[list[Any]]:
    arguments = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(
                f"line {number} is not valid JSON ({exc.msg}): {line.strip()!r}; "
                "write one JSON array of arguments per line, such as [6, 7]",
                param_hint="'--stdin'",
            ) from None
        if not isinstance(value, list):
            raise click.BadParameter(
                f"line {number} is not a JSON array: {line.strip()!r}; write one "
                "JSON array of arguments per line, such as [6, 7]",
                param_hint="'--stdin'",
            )
        arguments.append(value)
    return arguments


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    stderr = sys.stderr
    if total < PROGRESS_MIN_TASKS or not stderr.isatty():
        yield None
        return
    with click.progressbar(
        length=total, label=f"queueing {total} tasks", file=stderr
    ) as bar:
        yield bar.update


def _wait_for_one(admin: QueueAdmin, task_id: str, timeout: float | None) -> None:
    try:
        result = admin.wait_result(task_id, timeout)
    except TimeoutError as exc:
        raise click.ClickException(
            f"{exc}; the task was not cancelled and may still run"
        ) from exc
    if not result.ok:
        raise click.ClickException(str(error_from_result(result)))
    click.echo(dump_json(result.value))


def _wait_for_batch(
    admin: QueueAdmin, task_ids: list[str], timeout: float | None
) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    failed = 0
    for done, task_id in enumerate(task_ids):
        # A deadline that passed still allows one read of a result that is there.
        remaining = (
            None if deadline is None else max(0.001, deadline - time.monotonic())
        )
        try:
            result = admin.wait_result(task_id, remaining)
        except TimeoutError:
            raise click.ClickException(
                f"timed out after {timeout} s with {done} of {len(task_ids)} results; "
                "the other tasks were not cancelled and may still run"
            ) from None
        if result.ok:
            click.echo(dump_json({"task_id": task_id, "result": result.value}))
        else:
            failed += 1
            error = str(error_from_result(result))
            click.echo(dump_json({"task_id": task_id, "error": error}))
            click.echo(f"Error: {error}", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(task_ids)} tasks failed")
