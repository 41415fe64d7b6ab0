"""The `tasker` command as a real subprocess and through click's CliRunner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from apps import edge_worker
from click.testing import CliRunner
from helpers import wait_until
from tasker_redis_cli.main import cli, worker

from tasker_redis import TaskManager, __version__
from tasker_redis import local_server as local_server_module
from tasker_redis.keys import QueueKeys
from tasker_redis.local_server import LocalRedisServer, free_port

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
SPEC = "apps.edge_worker:config"
KEYS = QueueKeys(edge_worker.QUEUE)
PASSWORD = "secret"

# Seconds a test waits for a worker's result, a list entry or a process exit.
WAIT = 20

EDGE_TASKS = (
    edge_worker.echo,
    edge_worker.add,
    edge_worker.worker_pid,
    edge_worker.return_set,
    edge_worker.return_bytes,
    edge_worker.push,
    edge_worker.block_until_released,
)

MakeManager = Callable[..., TaskManager]


@dataclass(frozen=True)
class Outcome:
    """The exit code and output of one `tasker` run."""

    exit_code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """Return the lines of stderr that click starts with "Error:"."""
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]


Invoke = Callable[..., Outcome]


def run_subprocess(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """Run `python -m tasker_redis_cli ARGS` from tests/, as a user would."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
        **(env or {}),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tasker_redis_cli", *args],
        cwd=TESTS,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Outcome(completed.returncode, completed.stdout, completed.stderr)


def run_cli_runner(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """Run the click group in this process with CliRunner.

    An exception that escapes the command is appended to stderr as a
    traceback, as the real command would print it.
    """
    result = CliRunner().invoke(cli, args, env=env, prog_name="tasker")
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Outcome(result.exit_code, result.stdout, stderr)


@pytest.fixture(params=[run_subprocess, run_cli_runner], ids=["subprocess", "runner"])
def invoke(request: pytest.FixtureRequest) -> Invoke:
    """Run `tasker` once as a subprocess and once through CliRunner."""
    runner: Invoke = request.param
    return runner


@pytest.fixture
def make_manager(redis_url: str) -> Iterator[MakeManager]:
    """Return a function that builds a TaskManager on the edge queue.

    Keyword arguments override Config fields. Every manager is killed after
    the test.
    """
    managers: list[TaskManager] = []

    def make(**overrides: Any) -> TaskManager:
        config = edge_worker.build_config(redis_url=redis_url, **overrides)
        manager = TaskManager(config)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.kill()


@pytest.fixture
def password_url(tmp_path: Path) -> Iterator[str]:
    """The URL, with password, of a second private server that requires it."""
    server = LocalRedisServer(
        tmp_path / "redis-password",
        appendonly=False,
        extra_args=["--requirepass", PASSWORD],
    )
    server.start()
    try:
        yield f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    finally:
        server.stop(kill=True)


def normalize(text: str) -> str:
    """Collapse runs of whitespace, so help text that click wrapped compares equal."""
    return " ".join(text.split())


# Help and version


@pytest.mark.parametrize(
    ("args", "command"),
    [
        pytest.param(["--help"], cli, id="tasker"),
        pytest.param(["worker", "--help"], worker, id="tasker-worker"),
    ],
)
def test_help_describes_every_option(
    invoke: Invoke, args: list[str], command: click.Command
) -> None:
    outcome = invoke(args)
    text = normalize(outcome.stdout)
    context = click.Context(command, info_name="tasker")
    options = [
        param
        for param in command.get_params(context)
        if isinstance(param, click.Option)
    ]

    assert outcome.exit_code == 0
    assert len(options) >= 2
    for option in options:
        assert option.help, f"option {option.name} has no help text"
        assert normalize(option.help) in text
        for flag in option.opts + option.secondary_opts:
            assert flag in text


def test_help_lists_worker_command(invoke: Invoke) -> None:
    outcome = invoke(["--help"])

    assert outcome.exit_code == 0
    assert "worker Run worker processes for the Config at MODULE:ATTRIBUTE." in (
        normalize(outcome.stdout)
    )


def test_worker_help_names_spec(invoke: Invoke) -> None:
    outcome = invoke(["worker", "--help"])

    assert outcome.exit_code == 0
    assert "worker [OPTIONS] MODULE:ATTRIBUTE" in outcome.stdout


def test_console_script_help() -> None:
    script = Path(sys.executable).with_name("tasker")

    completed = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )

    assert completed.returncode == 0
    assert completed.stdout.startswith("Usage: tasker [OPTIONS] COMMAND")


def test_version_option(invoke: Invoke) -> None:
    outcome = invoke(["--version"])

    assert outcome.exit_code == 0
    assert outcome.stdout.strip() == f"tasker-redis, version {__version__}"


# Rejected arguments


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            "apps.edge_worker",
            "'apps.edge_worker' is not MODULE:ATTRIBUTE",
            id="no-colon",
        ),
        pytest.param(
            "apps.edge_worker:",
            "'apps.edge_worker:' is not MODULE:ATTRIBUTE",
            id="no-attribute",
        ),
        pytest.param(":config", "':config' is not MODULE:ATTRIBUTE", id="no-module"),
        pytest.param(
            "apps.edge_missing:config",
            "cannot import module 'apps.edge_missing'",
            id="missing-module",
        ),
        pytest.param(
            "apps.edge_worker:missing",
            "module 'apps.edge_worker' has no attribute 'missing'",
            id="missing-attribute",
        ),
        pytest.param(
            "apps.edge_worker:NOT_A_CONFIG",
            "apps.edge_worker:NOT_A_CONFIG is not a tasker_redis.Config but int 42",
            id="int-attribute",
        ),
        pytest.param(
            "apps.edge_worker:echo",
            "apps.edge_worker:echo is not a tasker_redis.Config but Task",
            id="task-attribute",
        ),
    ],
)
def test_bad_spec_exits_2(invoke: Invoke, spec: str, expected: str) -> None:
    outcome = invoke(["worker", spec])
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert expected in errors[0]
    assert "Traceback" not in outcome.stderr
    assert outcome.stdout == ""


def test_workers_zero_exits_2(invoke: Invoke) -> None:
    outcome = invoke(["worker", SPEC, "--workers", "0"])
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert "0 is not in the range x>=1" in errors[0]


def test_invalid_queue_option_exits_2(invoke: Invoke) -> None:
    # An option value that makes the Config invalid is a usage error.
    outcome = invoke(["worker", SPEC, "--queue", "my queue"])
    errors = outcome.error_lines()

    assert outcome.exit_code == 2
    assert len(errors) == 1
    assert "invalid queue name 'my queue'" in errors[0]


def test_invalid_config_at_import_exits_1() -> None:
    outcome = run_subprocess(["worker", SPEC], env={"EDGE_WORKERS": "0"})
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert "worker_count must be at least 1, got 0" in errors[0]
    assert "Traceback" not in outcome.stderr


def test_unreachable_redis_exits_1(invoke: Invoke) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"

    outcome = invoke(["worker", SPEC, "--redis-url", url])
    errors = outcome.error_lines()

    assert outcome.exit_code == 1
    assert len(errors) == 1
    assert f"cannot connect to Redis at redis://:***@127.0.0.1:{port}/0" in errors[0]
    assert PASSWORD not in outcome.stdout + outcome.stderr


# Running workers


def test_workers_option_starts_three(
    start_workers: Callable[..., Any], redis_client: redis.Redis
) -> None:
    workers = start_workers(SPEC, "--workers", "3")

    wait_until(lambda: redis_client.zcard(KEYS.workers) == 3)

    worker_ids = [
        member.decode() for member in redis_client.zrange(KEYS.workers, 0, -1)
    ]
    pids = {int(redis_client.hget(KEYS.worker_info(id_), "pid")) for id_ in worker_ids}
    assert len(pids) == 3
    assert workers.pid not in pids
    assert "workers=3" in workers.log()


def test_queue_option_overrides_config(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    start_workers(SPEC, "--queue", "edge-other")
    manager = make_manager(queue="edge-other")

    assert manager.queue_task_async(edge_worker.echo, "x").result(WAIT) == "x"
    assert redis_client.zcard(QueueKeys("edge-other").workers) == 1
    assert redis_client.zcard(KEYS.workers) == 0


def test_redis_url_option_overrides_config(
    start_workers: Callable[..., Any], make_manager: MakeManager, redis_url: str
) -> None:
    # Both the Config and $TASKER_REDIS_URL name a port where nothing listens,
    # so the worker reaches the test's server only through --redis-url.
    unused = f"redis://127.0.0.1:{free_port()}/0"
    start_workers(
        SPEC,
        "--redis-url",
        redis_url,
        env={"TASKER_REDIS_URL": unused, "EDGE_REDIS_URL": unused},
    )
    manager = make_manager()

    assert manager.queue_task_async(edge_worker.echo, 5).result(WAIT) == 5


def test_factory_spec_starts_worker(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    start_workers("apps.edge_worker:build_config")
    manager = make_manager()

    assert manager.queue_task_async(edge_worker.add, 2, 2).result(WAIT) == 4


def test_start_log_masks_password(
    start_workers: Callable[..., Any], password_url: str
) -> None:
    queue = "edge-auth"
    client = redis.Redis.from_url(password_url)
    workers = start_workers(
        SPEC,
        "--workers",
        "2",
        env={"TASKER_REDIS_URL": password_url, "EDGE_QUEUE": queue},
    )
    try:
        wait_until(lambda: client.zcard(QueueKeys(queue).workers) == 2)
    finally:
        client.close()

    workers.signal(signal.SIGINT)

    assert workers.wait(timeout=WAIT) == 0
    log = workers.log()
    start_lines = [line for line in log.splitlines() if "worker starting:" in line]
    masked_url = password_url.replace(f":{PASSWORD}@", ":***@")
    assert len(start_lines) == 1
    assert f"queue={queue} " in start_lines[0]
    assert "workers=2 " in start_lines[0]
    assert f"redis={masked_url} " in start_lines[0]
    for task in EDGE_TASKS:
        assert task.name in start_lines[0]
    assert PASSWORD not in log


def test_local_server_with_password_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server on loopback responds within milliseconds, so 3 s is ample.
    monkeypatch.setattr(local_server_module, "START_TIMEOUT", 3.0)
    server = LocalRedisServer(
        tmp_path / "redis-password", extra_args=["--requirepass", PASSWORD]
    )
    try:
        server.start()
    finally:
        server.stop(kill=True)


def test_first_sigint_stops_gracefully(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    workers = start_workers(SPEC)
    manager = make_manager()
    future = manager.queue_task_async(
        edge_worker.block_until_released, "edge:started", "edge:release"
    )
    assert redis_client.blpop(["edge:started"], timeout=WAIT) is not None

    workers.signal(signal.SIGINT)
    wait_until(lambda: "received SIGINT" in workers.log())
    redis_client.rpush("edge:release", "go")

    assert future.result(timeout=WAIT) == "go"
    assert workers.wait(timeout=WAIT) == 0
    assert redis_client.zcard(KEYS.workers) == 0
    assert redis_client.zcard(KEYS.inflight) == 0
    assert "tasker worker stopped (exit code 0)" in workers.log()


def test_second_sigint_requeues_task(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    workers = start_workers(SPEC)
    manager = make_manager()
    future = manager.queue_task_async(
        edge_worker.block_until_released, "edge:started", "edge:release"
    )
    assert redis_client.blpop(["edge:started"], timeout=WAIT) is not None

    workers.signal(signal.SIGINT)
    wait_until(lambda: "received SIGINT" in workers.log())
    workers.signal(signal.SIGINT)

    assert workers.wait(timeout=WAIT) == 128 + signal.SIGINT
    assert redis_client.llen(KEYS.high) == 1
    assert redis_client.hlen(KEYS.tasks) == 1
    assert not future.done()

    start_workers(SPEC)
    assert redis_client.blpop(["edge:started"], timeout=WAIT) is not None
    redis_client.rpush("edge:release", "again")
    assert future.result(timeout=WAIT) == "again"


def test_on_create_failure_claims_nothing(
    start_workers: Callable[..., Any],
    make_manager: MakeManager,
    redis_client: redis.Redis,
) -> None:
    manager = make_manager()
    future = manager.queue_task_async(edge_worker.echo, 1)
    assert manager.flush(timeout=WAIT)

    workers = start_workers(SPEC, env={"EDGE_FAIL_CREATE": "1"})

    assert workers.wait(timeout=WAIT) != 0
    assert redis_client.llen(KEYS.normal) == 1
    assert redis_client.hexists(KEYS.tasks, future.task_id) == 1
    assert redis_client.zcard(KEYS.inflight) == 0
    assert not future.done()
    assert edge_worker.CREATE_FAILURE in workers.log()


def test_on_destroy_failure_exits_0(
    start_workers: Callable[..., Any], make_manager: MakeManager
) -> None:
    workers = start_workers(SPEC, env={"EDGE_FAIL_DESTROY": "1"})
    manager = make_manager()
    assert manager.queue_task_async(edge_worker.echo, 1).result(WAIT) == 1

    workers.signal(signal.SIGINT)

    assert workers.wait(timeout=WAIT) == 0
    log = workers.log()
    assert "on_destroy raised while destroying a resource" in log
    assert edge_worker.DESTROY_FAILURE in log
