"""The operator commands stats, enqueue, dead-letter and purge, run end to end.

Each command runs as a real subprocess and through click's CliRunner, against
the test's private redis-server and, where a task must run, a real `tasker
worker` process.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import click
import pytest
import redis
from apps import ops_tasks
from click.testing import CliRunner
from tasker_redis_cli import stats as stats_module
from tasker_redis_cli.dead_letter import list_entries, retry, show
from tasker_redis_cli.dead_letter import purge as dead_letter_purge
from tasker_redis_cli.enqueue import enqueue
from tasker_redis_cli.main import cli
from tasker_redis_cli.purge import purge
from tasker_redis_cli.stats import stats

from tasker_redis import serialization as ser
from tasker_redis.admin import QueueAdmin
from tasker_redis.keys import QueueKeys
from tasker_redis.local_server import LocalRedisServer, free_port

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SPEC = "apps.ops_tasks:config"
KEYS = QueueKeys(ops_tasks.QUEUE)
OTHER_KEYS = QueueKeys("other")

# Seconds a test waits for a result, a list entry, an output line or an exit.
WAIT = 20

REASON = "task 'ops.late' is not registered in this process"
STARTED = "ops:started"
RELEASE = "ops:release"


@dataclass(frozen=True)
class Outcome:
    """The exit code and output of one `tasker` run."""

    exit_code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """Return the lines of stderr that click starts with "Error:"."""
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]


Runner = Callable[[list[str], str | None, dict[str, str]], Outcome]
Invoke = Callable[..., Outcome]
StartWorkers = Callable[..., Any]


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    """Return the environment of a `tasker` subprocess, with tests/ importable."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
        **extra,
    }


def tasker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tasker_redis_cli", *args]


def run_subprocess(args: list[str], stdin: str | None, env: dict[str, str]) -> Outcome:
    """Run `python -m tasker_redis_cli ARGS` from tests/, as a user would."""
    completed = subprocess.run(
        tasker_command(*args),
        cwd=TESTS,
        env=subprocess_env(env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Outcome(completed.returncode, completed.stdout, completed.stderr)


def run_cli_runner(args: list[str], stdin: str | None, env: dict[str, str]) -> Outcome:
    """Run the click group in this process with CliRunner.

    An exception that escapes the command is appended to stderr as a
    traceback, as the real command would print it.
    """
    result = CliRunner().invoke(cli, args, input=stdin, env=env, prog_name="tasker")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, result.stdout, stderr)


@pytest.fixture(params=[run_subprocess, run_cli_runner], ids=["subprocess", "runner"])
def runner(request: pytest.FixtureRequest) -> Runner:
    """Run `tasker` once as a subprocess and once through CliRunner."""
    chosen: Runner = request.param
    return chosen


@pytest.fixture
def tasker(runner: Runner, redis_url: str) -> Invoke:
    """Return a function that runs `tasker ARGS` with TASKER_REDIS_URL set.

    Call it as tasker(*args, stdin=text, env={...}).
    """

    def invoke(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> Outcome:
        return runner(list(args), stdin, {"TASKER_REDIS_URL": redis_url, **(env or {})})

    return invoke


@pytest.fixture
def admin(redis_client: redis.Redis) -> QueueAdmin:
    """A QueueAdmin of the default queue, to set up and check Redis state."""
    return QueueAdmin(redis_client, KEYS)


def normalize(text: str) -> str:
    """Collapse runs of whitespace, so aligned columns compare as single spaces."""
    return " ".join(text.split())


def add_dead_letter(
    client: redis.Redis,
    task_id: str,
    *,
    message: bytes | None = None,
    args: tuple[Any, ...] = (5,),
    keys: QueueKeys = KEYS,
) -> None:
    """Push a dead-letter entry like the one a worker writes for ops.late."""
    if message is None:
        message = ser.TaskMessage(
            task_id, "ops.late", args, enqueued_at=1_700_000_000.0
        ).encode(1 << 20)
    entry = ser.DeadLetter(task_id, REASON, message, "w1", 1_700_000_001.0)
    client.lpush(keys.dead, entry.encode())


def block_task(admin: QueueAdmin, client: redis.Redis) -> str:
    """Queue ops.block and return its id once a worker runs it."""
    (task_id,) = admin.queue_tasks("ops.block", [[STARTED, RELEASE]])
    item = client.blpop([STARTED], timeout=WAIT)
    assert item is not None
    assert item[1].decode() == task_id
    return task_id


def stop_workers(workers: Any) -> None:
    workers.signal(signal.SIGINT)
    assert workers.wait(timeout=WAIT) == 0


class LineReader:
    """Reads lines of a pipe on a thread, so a test can wait with a timeout.

    Attributes:
        seen: Every line read from the pipe so far.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.seen.append(line)
            self._lines.put(line)

    def join(self) -> None:
        """Wait until the pipe is closed and every line is read."""
        self._thread.join(timeout=WAIT)

    def next_line(self) -> str:
        """Return the next line; fail the test if none arrives within WAIT."""
        try:
            return self._lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"no output line within {WAIT} s")

    def next_matching(self, text: str) -> str:
        """Return the next line that contains text."""
        while True:
            line = self.next_line()
            if text in line:
                return line


# Help


COMMANDS = [
    pytest.param(["stats"], stats, id="stats"),
    pytest.param(["enqueue"], enqueue, id="enqueue"),
    pytest.param(["dead-letter", "list"], list_entries, id="dead-letter-list"),
    pytest.param(["dead-letter", "show"], show, id="dead-letter-show"),
    pytest.param(["dead-letter", "retry"], retry, id="dead-letter-retry"),
    pytest.param(["dead-letter", "purge"], dead_letter_purge, id="dead-letter-purge"),
    pytest.param(["purge"], purge, id="purge"),
]


@pytest.mark.parametrize(("words", "command"), COMMANDS)
def test_help_describes_options(
    tasker: Invoke, words: list[str], command: click.Command
) -> None:
    outcome = tasker(*words, "--help")
    text = normalize(outcome.stdout)
    context = click.Context(command, info_name="tasker")
    options = [
        param
        for param in command.get_params(context)
        if isinstance(param, click.Option)
    ]

    assert outcome.exit_code == 0
    assert "--redis-url" in text
    assert "--queue" in text
    for option in options:
        assert option.help, f"option {option.name} has no help text"
        assert normalize(option.help) in text


def test_help_lists_commands(tasker: Invoke) -> None:
    text = normalize(tasker("--help").stdout)

    assert "stats Show a queue's waiting tasks" in text
    assert "enqueue Queue the task registered as TASK_NAME" in text
    assert "dead-letter List, show, retry and purge" in text
    assert "purge Delete every task waiting in the queue" in text


# Errors shared by every command


@pytest.mark.parametrize(
    "words",
    [
        pytest.param(["stats"], id="stats"),
        pytest.param(["enqueue", "ops.multiply", "1", "2"], id="enqueue"),
        pytest.param(["dead-letter", "list"], id="dead-letter-list"),
        pytest.param(["dead-letter", "purge", "--yes"], id="dead-letter-purge"),
        pytest.param(["purge", "--yes"], id="purge"),
    ],
)
def test_unreachable_redis_exits_1(tasker: Invoke, words: list[str]) -> None:
    port = free_port()
    url = f"redis://:hunter2@127.0.0.1:{port}/0"

    outcome = tasker(*words, "--redis-url", url)
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert f"cannot connect to Redis at redis://:***@127.0.0.1:{port}/0" in errors[0]
    assert "hunter2" not in outcome.stdout + outcome.stderr
    assert "Traceback" not in outcome.stderr


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        pytest.param(
            ["--queue", "two words"],
            "Invalid value for '--queue': invalid queue name 'two words'",
            id="queue",
        ),
        pytest.param(
            ["--redis-url", "http://127.0.0.1/"],
            "Invalid value for '--redis-url': invalid redis_url 'http://127.0.0.1/'",
            id="scheme",
        ),
        pytest.param(
            ["--redis-url", "redis://127.0.0.1:port/0"],
            "Invalid value for '--redis-url': invalid Redis URL",
            id="port",
        ),
    ],
)
def test_bad_connection_option_exits_2(
    tasker: Invoke, option: list[str], expected: str
) -> None:
    outcome = tasker("stats", *option)
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert expected in errors[0]
    assert "Traceback" not in outcome.stderr


# stats


def test_stats_empty_queue(tasker: Invoke) -> None:
    outcome = tasker("stats")
    lines = [normalize(line) for line in outcome.stdout.splitlines()]

    assert outcome.exit_code == 0
    assert lines[0].startswith("Queue 'default' at ")
    assert "waiting 0 (high priority 0, normal 0)" in lines
    assert "in flight 0" in lines
    assert "dead letters 0" in lines
    assert (
        "counters queued 0, completed 0, failed 0, retried 0, dead_lettered 0, lost 0"
        in lines
    )
    assert "live workers 0" in lines


def test_stats_json_depths(
    tasker: Invoke, admin: QueueAdmin, redis_client: redis.Redis
) -> None:
    admin.queue_tasks("ops.multiply", [[1, 2], [3, 4]])
    admin.queue_tasks("ops.multiply", [[5, 6]], high_priority=True)
    add_dead_letter(redis_client, "d1")

    outcome = tasker("stats", "--json")
    snapshot = json.loads(outcome.stdout)

    assert outcome.exit_code == 0
    assert snapshot["queue"] == "default"
    assert snapshot["queued"] == {"high": 1, "normal": 2}
    assert snapshot["in_flight"] == 0
    assert snapshot["dead_letters"] == 1
    assert snapshot["counters"]["completed"] == 0
    assert snapshot["workers"] == []
    # Three arrivals in the 60 s window; nothing ran yet.
    assert snapshot["metrics"]["task_arrival_rate"] > 0
    assert snapshot["metrics"]["task_completion_rate"] == 0
    assert snapshot["metrics"]["p95_execution_time"] == 0


def test_stats_queue_option(tasker: Invoke, redis_client: redis.Redis) -> None:
    QueueAdmin(redis_client, OTHER_KEYS).queue_tasks("ops.multiply", [[1, 2]])

    other = json.loads(tasker("stats", "--json", "--queue", "other").stdout)
    default = json.loads(tasker("stats", "--json").stdout)

    assert other["queue"] == "other"
    assert other["queued"]["normal"] == 1
    assert default["queued"]["normal"] == 0


def test_stats_shows_running_task(
    tasker: Invoke,
    admin: QueueAdmin,
    redis_client: redis.Redis,
    start_workers: StartWorkers,
) -> None:
    workers = start_workers(SPEC)
    task_id = block_task(admin, redis_client)
    (worker_id,) = [
        member.decode() for member in redis_client.zrange(KEYS.workers, 0, -1)
    ]
    pid = int(redis_client.hget(KEYS.worker_info(worker_id), "pid"))

    snapshot = json.loads(tasker("stats", "--json").stdout)
    text = tasker("stats").stdout

    (worker,) = snapshot["workers"]
    assert snapshot["in_flight"] == 1
    assert worker["id"] == worker_id
    assert worker["pid"] == pid
    assert worker["pid"] != workers.pid
    assert worker["host"] == socket.gethostname()
    assert worker["current_task"] == task_id
    assert worker["current_task_name"] == "ops.block"
    assert worker["uptime"] >= 0
    assert worker["heartbeat_age"] < WAIT
    assert "live workers 1" in normalize(text)
    assert f"{task_id} (ops.block)" in text
    assert str(pid) in text
    redis_client.rpush(RELEASE, "go")
    assert admin.wait_result(task_id, WAIT).value == "go"


def test_stats_counts_outcomes(
    tasker: Invoke, admin: QueueAdmin, start_workers: StartWorkers
) -> None:
    start_workers(SPEC)
    (done,) = admin.queue_tasks("ops.multiply", [[6, 7]])
    (failed,) = admin.queue_tasks("ops.fail", [[]])
    assert admin.wait_result(done, WAIT).ok is True
    assert admin.wait_result(failed, WAIT).ok is False

    snapshot = json.loads(tasker("stats", "--json").stdout)

    assert snapshot["counters"]["completed"] == 1
    assert snapshot["counters"]["failed"] == 1
    assert snapshot["in_flight"] == 0


@dataclass
class Watch:
    """A `tasker stats --watch 0.1 --json` subprocess and readers of its output."""

    process: subprocess.Popen[str]
    stdout: LineReader
    stderr: LineReader

    def interrupt(self) -> int:
        """Send SIGINT, as Ctrl-C does, and return the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=WAIT)


@contextmanager
def watch_stats(redis_url: str) -> Iterator[Watch]:
    """Run `tasker stats --watch` until the block ends, then kill it if needed."""
    with subprocess.Popen(
        tasker_command("stats", "--watch", "0.1", "--json"),
        cwd=TESTS,
        env=subprocess_env({"TASKER_REDIS_URL": redis_url}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        watch = Watch(process, LineReader(process.stdout), LineReader(process.stderr))
        try:
            yield watch
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=WAIT)
            watch.stdout.join()
            watch.stderr.join()


def test_stats_watch_until_sigint(redis_url: str) -> None:
    with watch_stats(redis_url) as watch:
        first = json.loads(watch.stdout.next_line())
        second = json.loads(watch.stdout.next_line())

        code = watch.interrupt()

    assert first["queue"] == "default"
    assert second["time"] > first["time"]
    assert code == 0
    assert watch.stderr.seen == []


def test_stats_watch_survives_restart(
    redis_server: LocalRedisServer, redis_url: str
) -> None:
    with watch_stats(redis_url) as watch:
        watch.stdout.next_line()

        redis_server.stop(kill=True)
        error = watch.stderr.next_matching("Error:")
        redis_server.start()
        client = redis.Redis.from_url(redis_url)
        try:
            QueueAdmin(client, KEYS).queue_tasks("ops.multiply", [[1, 2]])
        finally:
            client.close()
        while json.loads(watch.stdout.next_line())["queued"]["normal"] != 1:
            pass

        code = watch.interrupt()

    assert "cannot read queue 'default'" in error
    assert "retrying in 0.1 s" in error
    assert code == 0
    assert "Traceback" not in "".join(watch.stderr.seen)


def test_stats_watch_in_runner(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    clock = SimpleNamespace(time=stats_module.time.time, sleep=sleep)
    monkeypatch.setattr(stats_module, "time", clock)

    outcome = run_cli_runner(
        ["stats", "--watch", "2.5"], None, {"TASKER_REDIS_URL": redis_url}
    )
    snapshots = [
        line for line in outcome.stdout.splitlines() if line.startswith("Queue")
    ]

    assert outcome.exit_code == 0
    assert len(snapshots) == 2
    assert sleeps == [2.5, 2.5]


def test_stats_watch_rejects_zero(tasker: Invoke) -> None:
    outcome = tasker("stats", "--watch", "0")
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert "'--watch'" in errors[0]


# enqueue


def queued_message(client: redis.Redis, task_id: str) -> ser.TaskMessage:
    data = client.hget(KEYS.tasks, task_id)
    assert data is not None
    return ser.TaskMessage.decode(data)


def test_enqueue_prints_task_id(tasker: Invoke, redis_client: redis.Redis) -> None:
    outcome = tasker("enqueue", "ops.multiply", "6", "7")
    task_id = outcome.stdout.strip()
    message = queued_message(redis_client, task_id)

    assert outcome.exit_code == 0
    assert len(task_id) == 32
    assert message.name == "ops.multiply"
    assert message.args == (6, 7)
    assert message.kwargs == {}
    assert message.priority is False
    assert message.once is False
    assert message.timeout is None
    assert message.reply_to is None
    assert redis_client.lrange(KEYS.normal, 0, -1) == [task_id.encode()]


def test_enqueue_options_set_message(tasker: Invoke, redis_client: redis.Redis) -> None:
    outcome = tasker(
        "enqueue",
        "ops.describe",
        '"a"',
        "[1, 2.5]",
        '{"k": null}',
        "--kwargs",
        '{"n": true}',
        "--priority",
        "--once",
        "--task-timeout",
        "4",
    )
    task_id = outcome.stdout.strip()
    message = queued_message(redis_client, task_id)

    assert outcome.exit_code == 0
    assert message.args == ("a", [1, 2.5], {"k": None})
    assert message.kwargs == {"n": True}
    assert message.priority is True
    assert message.once is True
    assert message.timeout == 4.0
    assert redis_client.lrange(KEYS.high, 0, -1) == [task_id.encode()]
    assert redis_client.sismember(KEYS.once, task_id) == 1


def test_enqueue_dash_arguments(tasker: Invoke, redis_client: redis.Redis) -> None:
    outcome = tasker("enqueue", "ops.multiply", "--", "-1", "2")
    message = queued_message(redis_client, outcome.stdout.strip())

    assert outcome.exit_code == 0
    assert message.args == (-1, 2)


def test_enqueue_queue_option(tasker: Invoke, redis_client: redis.Redis) -> None:
    outcome = tasker("enqueue", "ops.multiply", "1", "2", "--queue", "other")

    assert outcome.exit_code == 0
    assert redis_client.llen(OTHER_KEYS.normal) == 1
    assert redis_client.llen(KEYS.normal) == 0


def test_enqueue_wait_prints_result(
    tasker: Invoke, start_workers: StartWorkers
) -> None:
    start_workers(SPEC)

    outcome = tasker("enqueue", "ops.multiply", "6", "7", "--wait")

    assert outcome.exit_code == 0
    assert outcome.stdout == "42\n"
    assert outcome.stderr == ""


def test_enqueue_wait_prints_json(tasker: Invoke, start_workers: StartWorkers) -> None:
    start_workers(SPEC)

    outcome = tasker(
        "enqueue",
        "ops.describe",
        '"café"',
        "[1, 2]",
        "--kwargs",
        '{"deep": {"x": null}}',
        "--priority",
        "--wait",
    )

    assert outcome.exit_code == 0
    assert json.loads(outcome.stdout) == {
        "args": ["café", [1, 2]],
        "kwargs": {"deep": {"x": None}},
        "high_priority": True,
    }


def test_enqueue_failure_exits_1(tasker: Invoke, start_workers: StartWorkers) -> None:
    start_workers(SPEC)

    outcome = tasker("enqueue", "ops.fail", "--wait")
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert outcome.stdout == ""
    assert len(errors) == 1
    assert f"ValueError: {ops_tasks.FAILURE}" in errors[0]


def test_enqueue_unregistered_exits_1(
    tasker: Invoke, start_workers: StartWorkers, redis_client: redis.Redis
) -> None:
    start_workers(SPEC)

    outcome = tasker("enqueue", "ops.late", "5", "--wait")
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert "task 'ops.late' is not registered" in errors[0]
    assert redis_client.llen(KEYS.dead) == 1


def test_enqueue_wait_timeout_exits_1(
    tasker: Invoke, redis_client: redis.Redis
) -> None:
    outcome = tasker("enqueue", "ops.multiply", "1", "2", "--wait", "--timeout", "0.3")
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert "timed out after 0.3 s waiting for task" in errors[0]
    assert "the task was not cancelled" in errors[0]
    assert redis_client.llen(KEYS.normal) == 1


def test_enqueue_stdin_batch(tasker: Invoke, redis_client: redis.Redis) -> None:
    lines = "".join(f"[{index}, 2]\n" for index in range(1200))

    outcome = tasker("enqueue", "ops.multiply", "--stdin", stdin=lines + "\n")
    task_ids = outcome.stdout.split()
    # Producers LPUSH, so the first task queued is at the tail, where
    # workers pop.
    queued = [item.decode() for item in redis_client.lrange(KEYS.normal, 0, -1)]

    assert outcome.exit_code == 0
    assert len(task_ids) == 1200
    assert queued[::-1] == task_ids
    assert queued_message(redis_client, task_ids[7]).args == (7, 2)
    # No progress bar: stderr is not a terminal.
    assert outcome.stderr == ""


def test_enqueue_stdin_wait(tasker: Invoke, start_workers: StartWorkers) -> None:
    start_workers(SPEC)

    outcome = tasker(
        "enqueue", "ops.multiply", "--stdin", "--wait", stdin="[1, 2]\n\n[3, 4]\n"
    )
    results = [json.loads(line) for line in outcome.stdout.splitlines()]

    assert outcome.exit_code == 0
    assert [result["result"] for result in results] == [2, 12]
    assert all(len(result["task_id"]) == 32 for result in results)


def test_enqueue_stdin_failure_exits_1(
    tasker: Invoke, start_workers: StartWorkers
) -> None:
    start_workers(SPEC)

    outcome = tasker(
        "enqueue", "ops.multiply", "--stdin", "--wait", stdin='[2, 3]\n["a", "b"]\n'
    )
    results = [json.loads(line) for line in outcome.stdout.splitlines()]
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert results[0]["result"] == 6
    assert "TypeError" in results[1]["error"]
    assert len(errors) == 2
    assert "TypeError" in errors[0]
    assert errors[1] == "Error: 1 of 2 tasks failed"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["ops.multiply", "six", "7"],
            "argument 1, 'six', is not a JSON value",
            id="argument",
        ),
        pytest.param(
            ["ops.multiply", "--kwargs", "[1]"],
            "'[1]' is a JSON list, not an object",
            id="kwargs-list",
        ),
        pytest.param(
            ["ops.multiply", "--kwargs", "{"],
            "'{' is not valid JSON",
            id="kwargs-json",
        ),
        pytest.param(
            ["ops.multiply", "1", "--stdin"],
            "pass arguments either as ARGS or with --stdin, not both",
            id="args-and-stdin",
        ),
        pytest.param(
            ["ops.multiply", "--timeout", "1"],
            "--timeout applies only with --wait",
            id="timeout-without-wait",
        ),
        pytest.param(
            ["ops.multiply", "--task-timeout", "0"],
            "'--task-timeout': 0.0 is not in the range x>0",
            id="task-timeout",
        ),
        pytest.param([], "Missing argument 'TASK_NAME'", id="no-name"),
    ],
)
def test_enqueue_usage_exits_2(
    tasker: Invoke, redis_client: redis.Redis, args: list[str], expected: str
) -> None:
    outcome = tasker("enqueue", *args)
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert expected in errors[0]
    assert redis_client.hlen(KEYS.tasks) == 0


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        pytest.param("[1, 2]\nnope\n", "line 2 is not valid JSON", id="json"),
        pytest.param('[1, 2]\n{"a": 1}\n', "line 2 is not a JSON array", id="array"),
    ],
)
def test_enqueue_bad_line_exits_2(
    tasker: Invoke, redis_client: redis.Redis, stdin: str, expected: str
) -> None:
    outcome = tasker("enqueue", "ops.multiply", "--stdin", stdin=stdin)
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert expected in errors[0]
    assert redis_client.hlen(KEYS.tasks) == 0


def test_enqueue_progress_on_terminal(
    redis_url: str, redis_client: redis.Redis
) -> None:
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO once the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    process = subprocess.Popen(
        tasker_command("enqueue", "ops.multiply", "--stdin"),
        cwd=TESTS,
        env=subprocess_env({"TASKER_REDIS_URL": redis_url}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    lines = "".join(f"[{index}, 2]\n" for index in range(1500))
    try:
        stdout, _ = process.communicate(lines.encode(), timeout=60)
    finally:
        process.kill()
        process.wait(timeout=WAIT)
    reader.join(timeout=WAIT)
    os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")

    assert process.returncode == 0
    assert len(stdout.split()) == 1500
    assert "queueing 1500 tasks" in terminal
    assert "100%" in terminal
    assert redis_client.llen(KEYS.normal) == 1500


# dead-letter list and show


def test_list_shows_entries(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "older")
    add_dead_letter(redis_client, "newer", args=("x", 2))

    outcome = tasker("dead-letter", "list")
    lines = [normalize(line) for line in outcome.stdout.splitlines()]

    assert outcome.exit_code == 0
    assert lines[0] == "TASK ID TASK ARGS FAILED AT REASON"
    assert lines[1].startswith("newer ops.late ('x', 2) ")
    assert lines[2].startswith("older ops.late (5,) ")
    assert REASON[:40] in lines[1]
    assert len(lines) == 3


def test_list_json(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "d1", args=(b"raw", (1, 2)))

    outcome = tasker("dead-letter", "list", "--json")
    (entry,) = json.loads(outcome.stdout)

    assert outcome.exit_code == 0
    assert entry["task_id"] == "d1"
    assert entry["task"] == "ops.late"
    assert entry["args"] == ["raw", [1, 2]]
    assert entry["reason"] == REASON
    assert entry["worker"] == "w1"
    assert entry["failed_at"] == 1_700_000_001.0
    assert entry["priority"] == "normal"
    assert entry["error"] is None


def test_list_empty(tasker: Invoke) -> None:
    outcome = tasker("dead-letter", "list")

    assert outcome.exit_code == 0
    assert outcome.stdout == "no dead-letter entries in queue 'default'\n"


def test_list_limit(tasker: Invoke, redis_client: redis.Redis) -> None:
    for task_id in ("d1", "d2", "d3"):
        add_dead_letter(redis_client, task_id)

    limited = tasker("dead-letter", "list", "--limit", "2").stdout.splitlines()
    everything = tasker("dead-letter", "list", "--limit", "0").stdout.splitlines()

    assert len(limited) == 4
    assert limited[-1] == "showing 2 of 3 entries; pass --limit 0 to list all"
    assert len(everything) == 4
    assert everything[-1].startswith("d1 ")


def test_list_undecodable(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "bad", message=b"\xc1")
    redis_client.lpush(KEYS.dead, b"\xc1 garbage")

    outcome = tasker("dead-letter", "list")
    lines = [normalize(line) for line in outcome.stdout.splitlines()]

    assert outcome.exit_code == 0
    assert lines[1].startswith("(undecodable) the entry does not decode")
    assert lines[2].startswith("bad (undecodable) ")


def test_show_entry(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "d1", args=(5, "five"))

    outcome = tasker("dead-letter", "show", "d1")
    lines = [normalize(line) for line in outcome.stdout.splitlines()]

    assert outcome.exit_code == 0
    assert "task id d1" in lines
    assert "task ops.late" in lines
    assert "arguments (5, 'five')" in lines
    assert "kwargs {}" in lines
    assert "priority normal" in lines
    assert "at most once no" in lines
    assert f"reason {REASON}" in lines
    assert any(line.endswith(" by w1") for line in lines)


def test_show_json(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "d1")

    entry = json.loads(tasker("dead-letter", "show", "d1", "--json").stdout)

    assert entry["task_id"] == "d1"
    assert entry["args"] == [5]
    assert entry["once"] is False
    assert entry["enqueued_at"] == 1_700_000_000.0


def test_show_undecodable_message(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "bad", message=b"\xc1")

    outcome = tasker("dead-letter", "show", "bad")
    text = normalize(outcome.stdout)

    assert outcome.exit_code == 0
    assert "message its message does not decode" in text
    assert "this entry cannot be retried" in text
    assert "raw message b'\\xc1'" in text


def test_show_missing_exits_1(tasker: Invoke) -> None:
    outcome = tasker("dead-letter", "show", "nope")
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert "no dead-letter entry with task id 'nope' in queue 'default'" in errors[0]


# dead-letter retry


def test_retry_runs_task(
    tasker: Invoke,
    admin: QueueAdmin,
    redis_client: redis.Redis,
    start_workers: StartWorkers,
) -> None:
    # The first worker has no task "ops.late", so it dead-letters it.
    first = start_workers(SPEC)
    (task_id,) = admin.queue_tasks("ops.late", [[5]])
    assert admin.wait_result(task_id, WAIT).error_kind == ser.NOT_REGISTERED
    stop_workers(first)
    start_workers(SPEC, env={"OPS_LATE": "1"})

    outcome = tasker("dead-letter", "retry", task_id)

    assert outcome.exit_code == 0
    assert (
        outcome.stdout == f"queued task {task_id} (ops.late) again at normal priority\n"
    )
    assert admin.wait_result(task_id, WAIT).value == 6
    assert redis_client.llen(KEYS.dead) == 0


def test_retry_twice_exits_1(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "d1")

    first = tasker("dead-letter", "retry", "d1")
    second = tasker("dead-letter", "retry", "d1")

    assert first.exit_code == 0
    assert second.exit_code == 1
    assert "no dead-letter entry with task id 'd1'" in second.error_lines()[0]
    assert redis_client.lrange(KEYS.normal, 0, -1) == [b"d1"]


def test_retry_undecodable_exits_1(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "bad", message=b"\xc1")

    outcome = tasker("dead-letter", "retry", "bad")
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert (
        "cannot retry dead-letter entry 'bad': its message does not decode"
        in (errors[0])
    )
    assert redis_client.llen(KEYS.dead) == 1


def test_retry_all_reports_skipped(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "d1")
    add_dead_letter(redis_client, "bad", message=b"\xc1")
    add_dead_letter(redis_client, "d2")

    outcome = tasker("dead-letter", "retry", "--all")
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert outcome.stdout.splitlines() == [
        "queued task d2 (ops.late) again at normal priority",
        "queued task d1 (ops.late) again at normal priority",
    ]
    assert "skipped dead-letter entry bad: its message does not decode" in (
        outcome.stderr
    )
    assert errors == [
        "Error: 1 entry could not be retried and stayed in the list; "
        "queued 2 tasks again"
    ]
    assert redis_client.llen(KEYS.dead) == 1
    assert redis_client.llen(KEYS.normal) == 2


def test_retry_all_empty(tasker: Invoke) -> None:
    outcome = tasker("dead-letter", "retry", "--all")

    assert outcome.exit_code == 0
    assert outcome.stdout == "no dead-letter entries in queue 'default'\n"


@pytest.mark.parametrize(
    "args", [pytest.param([], id="neither"), pytest.param(["d1", "--all"], id="both")]
)
def test_retry_usage_exits_2(
    tasker: Invoke, redis_client: redis.Redis, args: list[str]
) -> None:
    add_dead_letter(redis_client, "d1")

    outcome = tasker("dead-letter", "retry", *args)
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert errors == ["Error: pass either an entry ID or --all"]
    assert redis_client.llen(KEYS.dead) == 1


# dead-letter purge


def test_dead_letter_purge_yes(tasker: Invoke, redis_client: redis.Redis) -> None:
    add_dead_letter(redis_client, "d1")
    add_dead_letter(redis_client, "d2")

    outcome = tasker("dead-letter", "purge", "--yes")

    assert outcome.exit_code == 0
    assert outcome.stdout == "deleted 2 dead-letter entries from queue 'default'\n"
    assert redis_client.exists(KEYS.dead) == 0


@pytest.mark.parametrize(
    ("answer", "code", "left"), [("y\n", 0, 0), ("n\n", 1, 1), ("", 1, 1)]
)
def test_dead_letter_purge_confirm(
    tasker: Invoke, redis_client: redis.Redis, answer: str, code: int, left: int
) -> None:
    add_dead_letter(redis_client, "d1")

    outcome = tasker("dead-letter", "purge", stdin=answer)

    assert outcome.exit_code == code
    assert "Delete 1 dead-letter entry of queue 'default'? [y/N]" in outcome.stderr
    assert redis_client.llen(KEYS.dead) == left


def test_dead_letter_purge_empty(tasker: Invoke) -> None:
    outcome = tasker("dead-letter", "purge")

    assert outcome.exit_code == 0
    assert outcome.stdout == "no dead-letter entries in queue 'default'\n"
    assert outcome.stderr == ""


# purge


def test_purge_yes_deletes_waiting(
    tasker: Invoke, admin: QueueAdmin, redis_client: redis.Redis
) -> None:
    admin.queue_tasks("ops.multiply", [[1, 2], [3, 4]])
    admin.queue_tasks("ops.multiply", [[5, 6]], high_priority=True, once=True)

    outcome = tasker("purge", "--yes")

    assert outcome.exit_code == 0
    assert outcome.stdout == "deleted 3 waiting tasks from queue 'default'\n"
    assert redis_client.hlen(KEYS.tasks) == 0
    assert redis_client.exists(KEYS.normal, KEYS.high, KEYS.wake, KEYS.once) == 0


def test_purge_keeps_in_flight(
    tasker: Invoke,
    admin: QueueAdmin,
    redis_client: redis.Redis,
    start_workers: StartWorkers,
) -> None:
    start_workers(SPEC)
    running = block_task(admin, redis_client)
    admin.queue_tasks("ops.multiply", [[1, 2], [3, 4]])

    outcome = tasker("purge", "--yes")
    redis_client.rpush(RELEASE, "go")

    assert outcome.exit_code == 0
    assert outcome.stdout == "deleted 2 waiting tasks from queue 'default'\n"
    assert admin.wait_result(running, WAIT).value == "go"
    # finish.lua drops the message in the step that writes the result.
    assert redis_client.hlen(KEYS.tasks) == 0
    assert redis_client.zcard(KEYS.inflight) == 0


@pytest.mark.parametrize(("answer", "code", "left"), [("y\n", 0, 0), ("n\n", 1, 2)])
def test_purge_confirm(
    tasker: Invoke, redis_client: redis.Redis, answer: str, code: int, left: int
) -> None:
    QueueAdmin(redis_client, KEYS).queue_tasks("ops.multiply", [[1, 2], [3, 4]])

    outcome = tasker("purge", stdin=answer)

    assert outcome.exit_code == code
    assert (
        "Delete 2 waiting tasks of queue 'default'? Tasks in flight keep running."
        in outcome.stderr
    )
    assert redis_client.hlen(KEYS.tasks) == left


def test_purge_empty(tasker: Invoke) -> None:
    outcome = tasker("purge")

    assert outcome.exit_code == 0
    assert outcome.stdout == "no tasks waiting in queue 'default'\n"


def test_purge_queue_option(
    tasker: Invoke, admin: QueueAdmin, redis_client: redis.Redis
) -> None:
    admin.queue_tasks("ops.multiply", [[1, 2]])
    QueueAdmin(redis_client, OTHER_KEYS).queue_tasks("ops.multiply", [[1, 2]])

    outcome = tasker("purge", "--yes", "--queue", "other")

    assert outcome.stdout == "deleted 1 waiting task from queue 'other'\n"
    assert redis_client.hlen(OTHER_KEYS.tasks) == 0
    assert redis_client.hlen(KEYS.tasks) == 1
