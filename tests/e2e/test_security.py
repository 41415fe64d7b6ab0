"""End-to-end tests of Redis passwords, ACL users, TLS and untrusted messages.

Each test starts its own redis-server on 127.0.0.1, real `tasker worker`
processes running apps.sec_tasks, and a TaskManager. The ACL tests create
their users from the ACL SETUSER lines of docs/security.md, so the documented
rights are the ones tested.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import pytest
import redis
from apps import sec_tasks
from helpers import wait_until

from tasker_redis import (
    RedisUnavailableError,
    TaskDeadLettered,
    TaskManager,
    TaskNotRegistered,
)
from tasker_redis.keys import QueueKeys
from tasker_redis.local_server import LocalRedisServer, find_server_binary, free_port
from tasker_redis.scripts import QueueScripts
from tasker_redis.serialization import MESSAGE_VERSION, DeadLetter, TaskMessage

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECURITY_DOC = ROOT / "docs" / "security.md"
SPEC = "apps.sec_tasks:config"
QUEUE = "secure"

# Passwords that appear nowhere else, so finding one in output is a leak.
PASSWORD = "pw-7Qx2-never-print-me"
PRODUCER_PASSWORD = "pw-producer-4Kd9-never-print-me"
WORKER_PASSWORD = "pw-worker-8Zr3-never-print-me"
WRONG_PASSWORD = "pw-wrong-5Tn6-never-print-me"

# redis-py sends CLIENT SETINFO on connect and ignores an error. Redis 7.2
# and newer have the command and log its denial in ACL LOG.
IGNORED_DENIALS = {"client|setinfo"}

StartWorkers = Callable[..., Any]


# Servers


@dataclass
class ServerProcess:
    """A redis-server child process that a test started with its own options."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def responds(self, client: redis.Redis) -> bool:
        """Return True once the server replies to PING, and fail if it exited."""
        code = self.process.poll()
        if code is not None:
            pytest.fail(f"redis-server exited with code {code}, see {self.log_path}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Return a function that starts redis-server with options and waits for PING.

    LocalRedisServer waits for a PING over plain TCP, which a TLS-only server
    never receives. The function takes the port, the options and a URL whose
    client can PING the server. Every server is killed after the test.
    """
    servers: list[ServerProcess] = []

    def start(port: int, options: list[str], ping_url: str) -> ServerProcess:
        directory = tmp_path / f"redis-{port}"
        directory.mkdir()
        log_path = directory / "redis.log"
        command = [
            find_server_binary(),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(log_path),
            *options,
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        server = ServerProcess(process, port, log_path)
        servers.append(server)
        client = redis.Redis.from_url(ping_url, socket_timeout=1.0)
        try:
            wait_until(lambda: server.responds(client), timeout=10)
        finally:
            client.close()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def auth_server(launch: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose default user needs PASSWORD and with a user "app" too.

    "app" is defined by a --user option and may use every command on the
    keys of any queue.
    """
    port = free_port()
    options = [
        "--port",
        str(port),
        "--requirepass",
        PASSWORD,
        "--user",
        "app",
        "on",
        f">{PASSWORD}",
        "~tasker:*",
        "+@all",
    ]
    return launch(port, options, f"redis://:{PASSWORD}@127.0.0.1:{port}/0")


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA, a server certificate for IP 127.0.0.1 and a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"openssl {args[0]} failed: {result.stderr.decode()}")


EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req",
        "-x509",
        *EC_KEY,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        "-days",
        "1",
        "-subj",
        f"/CN={name}",
    )
    return cert, key


def _sign(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    request = directory / f"{name}.csr"
    extension_file = directory / f"{name}.ext"
    extension_file.write_text(extensions)
    _openssl(
        "req",
        "-new",
        *EC_KEY,
        "-keyout",
        str(key),
        "-out",
        str(request),
        "-subj",
        f"/CN={name}",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(extension_file),
    )
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Generate the certificates of this module's TLS servers with the openssl CLI."""
    directory = tmp_path_factory.mktemp("tls")
    ca = _make_ca(directory, "tasker-test-ca")
    other_ca, _ = _make_ca(directory, "other-test-ca")
    server_cert, server_key = _sign(
        directory, "server", ca, "subjectAltName=IP:127.0.0.1\n"
    )
    client_cert, client_key = _sign(
        directory, "client", ca, "extendedKeyUsage=clientAuth\n"
    )
    return Certificates(
        ca[0], server_cert, server_key, client_cert, client_key, other_ca
    )


def tls_url(
    port: int,
    ca: Path,
    *,
    host: str = "127.0.0.1",
    client: Certificates | None = None,
) -> str:
    """Return a rediss:// URL that checks the server's certificate and host name.

    ca is the CA file the certificate must be signed by.
    """
    query = (
        "ssl_cert_reqs=required&ssl_check_hostname=true"
        f"&ssl_ca_certs={quote(str(ca), safe='/')}"
    )
    if client is not None:
        query += f"&ssl_certfile={quote(str(client.client_cert), safe='/')}"
        query += f"&ssl_keyfile={quote(str(client.client_key), safe='/')}"
    return f"rediss://:{PASSWORD}@{host}:{port}/0?{query}"


def start_tls_server(
    launch: Callable[..., ServerProcess],
    certificates: Certificates,
    *,
    client_certificates: bool,
) -> ServerProcess:
    """Start a server that listens only on a TLS port and needs PASSWORD."""
    port = free_port()
    options = [
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(certificates.server_cert),
        "--tls-key-file",
        str(certificates.server_key),
        "--tls-ca-cert-file",
        str(certificates.ca),
        "--tls-auth-clients",
        "yes" if client_certificates else "no",
        "--requirepass",
        PASSWORD,
    ]
    client = certificates if client_certificates else None
    return launch(port, options, tls_url(port, certificates.ca, client=client))


@pytest.fixture
def tls_server(
    launch: Callable[..., ServerProcess], certificates: Certificates
) -> ServerProcess:
    """A TLS-only server that does not ask clients for a certificate."""
    return start_tls_server(launch, certificates, client_certificates=False)


# ACL users from docs/security.md


def documented_acl(user: str, queue: str, password: str) -> list[str]:
    """Return the ACL SETUSER arguments that docs/security.md gives for user.

    The <queue> and <password> placeholders are replaced.
    """
    prefix = f"ACL SETUSER {user} "
    lines = [
        line
        for line in SECURITY_DOC.read_text().splitlines()
        if line.startswith(prefix)
    ]
    if len(lines) != 1:
        pytest.fail(f"{SECURITY_DOC} has {len(lines)} lines starting {prefix!r}")
    text = lines[0].replace("<queue>", queue).replace("<password>", password)
    return text.split()[2:]


def without(arguments: list[str], rule: str) -> list[str]:
    """Return the ACL SETUSER arguments without one rule, which must be there."""
    if rule not in arguments:
        pytest.fail(f"rule {rule!r} is not in {arguments}")
    return [argument for argument in arguments if argument != rule]


@dataclass
class AclQueue:
    """A queue of the test's server with the documented producer and worker users."""

    admin: redis.Redis
    port: int
    queue: str = QUEUE

    @property
    def keys(self) -> QueueKeys:
        return QueueKeys(self.queue)

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"

    @property
    def producer_url(self) -> str:
        return self.url("tasker-producer", PRODUCER_PASSWORD)

    @property
    def worker_url(self) -> str:
        return self.url("tasker-worker", WORKER_PASSWORD)

    def set_user(self, arguments: list[str]) -> None:
        self.admin.execute_command("ACL", "SETUSER", *arguments)

    def producer_acl(self) -> list[str]:
        return documented_acl("tasker-producer", self.queue, PRODUCER_PASSWORD)

    def worker_acl(self) -> list[str]:
        return documented_acl("tasker-worker", self.queue, WORKER_PASSWORD)

    def denials(self) -> list[str]:
        """Return the commands and keys in ACL LOG, except IGNORED_DENIALS."""
        entries = self.admin.acl_log()
        found = [str(entry["object"]) for entry in entries]
        return [name for name in found if name not in IGNORED_DENIALS]

    def last_command(self, client_name: str) -> str:
        """Return the last command of the connection named client_name, or ""."""
        for entry in self.admin.client_list():
            if entry["name"] == client_name:
                return str(entry["cmd"])
        return ""

    def manager(self, **settings: Any) -> TaskManager:
        """Return a TaskManager that connects as the producer user."""
        return TaskManager(
            sec_tasks.build_config(
                redis_url=self.producer_url, queue=self.queue, **settings
            )
        )


@pytest.fixture
def acl_queue(redis_server: LocalRedisServer, redis_client: redis.Redis) -> AclQueue:
    """The queue QUEUE with the producer and worker users of docs/security.md."""
    queue = AclQueue(redis_client, redis_server.port)
    queue.set_user(queue.producer_acl())
    queue.set_user(queue.worker_acl())
    redis_client.acl_log_reset()
    return queue


def start_queue_workers(
    start_workers: StartWorkers,
    url: str,
    *options: str,
    workers: int = 1,
    **env: str,
) -> Any:
    """Start `tasker worker` for QUEUE with more options, connected with url."""
    environment = {"TASKER_REDIS_URL": url, sec_tasks.QUEUE_ENV: QUEUE, **env}
    return start_workers(SPEC, "--workers", str(workers), *options, env=environment)


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `tasker ARGS...` with TASKER_REDIS_URL set to url."""
    environment = {**os.environ, "TASKER_REDIS_URL": url}
    command = [sys.executable, "-m", "tasker_redis_cli", *args]
    return subprocess.run(
        command,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def connection_names(client: redis.Redis, name_prefix: str) -> set[str]:
    """Return the distinct names of connections that start with name_prefix."""
    names = {entry["name"] for entry in client.client_list()}
    return {name for name in names if name.startswith(name_prefix)}


def stop_gracefully(worker: Any) -> int:
    """Send SIGTERM to a supervisor and return its exit code."""
    worker.signal(signal.SIGTERM)
    code: int = worker.wait()
    return code


# Raw messages, as any client allowed to run the enqueue script could queue them


def inject(client: redis.Redis, task_id: str, message: bytes) -> None:
    """Queue message bytes under task_id with the enqueue script."""
    queue_scripts = QueueScripts(client, QueueKeys(QUEUE))
    queue_scripts.enqueue([(task_id, message)], high_priority=False, once=False)


def raw_message(task_id: str, name: str, *packed_args: bytes) -> bytes:
    """Return a message like TaskMessage.encode's with already packed arguments.

    The arguments are msgpack bytes written by the test, so they can hold
    extension types that msgpack.packb cannot write, such as negative codes.
    """
    body = {
        "v": MESSAGE_VERSION,
        "id": task_id,
        "task": name,
        "kwargs": {},
        "priority": False,
        "once": False,
        "reply_to": None,
        "enqueued_at": 0.0,
        "timeout": None,
    }
    packed = msgpack.packb(body, use_bin_type=True)
    # Both maps have fewer than 16 entries, so each header is one fixmap byte.
    header = bytes([0x80 | (len(body) + 1)])
    args = bytes([0x90 | len(packed_args)]) + b"".join(packed_args)
    return header + packed[1:] + msgpack.packb("args") + args


# A msgpack timestamp 32 value: seconds since the epoch as 4 bytes.
TIMESTAMP = struct.pack(">I", 1_700_000_000)


def extension(code: int, data: bytes) -> bytes:
    """Return a msgpack ext 8 value: length, signed type code, then data."""
    return b"\xc7" + bytes([len(data)]) + struct.pack("b", code) + data


class SystemCall:
    """An object whose pickle runs os.system(command) when it is unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def dead_letters(client: redis.Redis) -> list[DeadLetter]:
    """Return the entries of QUEUE's dead-letter list, oldest first."""
    entries = client.lrange(QueueKeys(QUEUE).dead, 0, -1)
    return [DeadLetter.decode(entry) for entry in reversed(entries)]


# Passwords and what is masked


AUTH_URLS = {
    "requirepass": ("redis://:{password}@127.0.0.1:{port}/0", "default"),
    "acl_user": ("redis://app:{password}@127.0.0.1:{port}/0", "app"),
    "query": ("redis://127.0.0.1:{port}/0?password={password}", "default"),
}


@pytest.mark.parametrize("way", list(AUTH_URLS))
def test_auth_workflow(
    auth_server: ServerProcess, start_workers: StartWorkers, way: str
) -> None:
    template, user = AUTH_URLS[way]
    url = template.format(password=PASSWORD, port=auth_server.port)
    worker = start_queue_workers(start_workers, url, workers=2)
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    admin = redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{auth_server.port}/0")
    with TaskManager(config) as manager, admin:
        assert manager.queue_task(sec_tasks.add, 2, 3) == 5
        futures = [manager.queue_task_async(sec_tasks.add, i, 1) for i in range(10)]
        assert [future.result(timeout=30) for future in futures] == list(range(1, 11))
        assert manager.stats().completed_tasks == 11

        # Every connection that tasker named logged in as the URL's user.
        clients = admin.client_list()
        tasker_users = {
            entry["user"] for entry in clients if entry["name"].startswith("tasker")
        }
        assert tasker_users == {user}

    assert stop_gracefully(worker) == 0
    output = worker.log()
    masked = template.format(password="***", port=auth_server.port)
    assert f"redis={masked} " in output
    assert PASSWORD not in output


CONNECT_MESSAGES = {
    "wrong_password": "Redis at {url} rejected the credentials",
    "no_server": "cannot connect to Redis at {url}",
}


@pytest.mark.parametrize("server", list(CONNECT_MESSAGES))
def test_connect_error_masks_password(auth_server: ServerProcess, server: str) -> None:
    port = auth_server.port if server == "wrong_password" else free_port()
    url = f"redis://app:{WRONG_PASSWORD}@127.0.0.1:{port}/0"
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)
    masked = f"redis://app:***@127.0.0.1:{port}/0"
    assert CONNECT_MESSAGES[server].format(url=masked) in str(caught.value)
    # The cause from redis-py is printed with the error, so check it as well.
    assert WRONG_PASSWORD not in str(caught.value)
    assert WRONG_PASSWORD not in str(caught.getrepr(chain=True))


@pytest.mark.parametrize("via", ["env", "option"])
def test_cli_error_masks_password(
    auth_server: ServerProcess, start_workers: StartWorkers, via: str
) -> None:
    url = f"redis://app:{WRONG_PASSWORD}@127.0.0.1:{auth_server.port}/0"
    if via == "env":
        worker = start_workers(SPEC, env={"TASKER_REDIS_URL": url})
    else:
        worker = start_workers(SPEC, "--redis-url", url)
    assert worker.wait() == 1
    output = worker.log()
    masked = f"redis://app:***@127.0.0.1:{auth_server.port}/0"
    assert f"Error: Redis at {masked} rejected the credentials" in output
    assert WRONG_PASSWORD not in output


def test_query_password_masked(auth_server: ServerProcess) -> None:
    url = f"redis://127.0.0.1:{auth_server.port}/0?password={WRONG_PASSWORD}"
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)
    assert f"127.0.0.1:{auth_server.port}/0?password=*** " in str(caught.value)
    assert WRONG_PASSWORD not in str(caught.getrepr(chain=True))


@pytest.mark.parametrize("password", [PASSWORD, WRONG_PASSWORD])
def test_cli_stats_masks_password(auth_server: ServerProcess, password: str) -> None:
    url = f"redis://app:{password}@127.0.0.1:{auth_server.port}/0"
    result = run_cli(url, "stats", "--queue", QUEUE)
    assert result.returncode == (0 if password == PASSWORD else 1)
    assert password not in result.stdout
    assert password not in result.stderr


def test_config_repr_masks_password() -> None:
    url = f"redis://app:{PASSWORD}@127.0.0.1:{free_port()}/0"
    config = sec_tasks.build_config(redis_url=url)
    assert PASSWORD not in repr(config)


# ACL users from docs/security.md


def close(manager: TaskManager) -> None:
    """Stop a manager without waiting for results.

    stop() joins the result-listener thread, so the thread cannot log errors
    after the test's server is gone. kill() then fails the waiting futures.
    """
    manager.stop(timeout=0)
    manager.kill()


def queue_one(queue: AclQueue) -> Any:
    """Queue one task as the producer user and wait for its result."""
    manager = queue.manager()
    try:
        return manager.queue_task(sec_tasks.add, 1, 2)
    finally:
        close(manager)


def test_acl_workflow(
    acl_queue: AclQueue, start_workers: StartWorkers, tmp_path: Path
) -> None:
    # A 0.6 s lease makes workers send heartbeats and run the recover script
    # every 0.2 s, and burst scaling makes the supervisor read the queue's
    # counts every 0.2 s, so those scripts run under the worker user too.
    worker = start_queue_workers(
        start_workers,
        acl_queue.worker_url,
        "--max-workers",
        "3",
        "--burst-interval",
        "0.2",
        workers=2,
        **{sec_tasks.LEASE_TIMEOUT_ENV: "0.6"},
    )
    admin = acl_queue.admin

    # The supervisor's first script call, before any worker exits, is the
    # stats script of a burst scaling check.
    wait_until(lambda: acl_queue.last_command("tasker-supervisor") == "evalsha")

    with acl_queue.manager(lease_timeout=0.6) as manager:
        # Blocking calls wait without a timeout, so the calls with one come first.
        futures = [manager.queue_task_async(sec_tasks.add, i, 1) for i in range(20)]
        assert [future.result(timeout=30) for future in futures] == list(range(1, 21))
        assert manager.queue_task(sec_tasks.add, 2, 3) == 5
        many = manager.queue_many(sec_tasks.add, [(1, 1), (2, 2)], high_priority=True)
        assert [future.result(timeout=30) for future in many] == [2, 4]
        assert manager.result(futures[0].task_id, timeout=30) == 1
        assert manager.queue_task_with_priority_once(sec_tasks.add, 4, 4) == 8
        assert manager.run_task(sec_tasks.add, 5, 5) == 10

        # An unhealthy failure runs the retry script, and the second run succeeds.
        assert manager.queue_task(sec_tasks.fail_once, str(tmp_path / "failed")) == 2

        # When a worker dies, the supervisor puts its task back with the
        # release script, and the next run succeeds.
        assert manager.queue_task(sec_tasks.exit_once, str(tmp_path / "exited")) == 2

        # A lease can expire on a worker that is gone without a trace, as
        # after its machine died. A live worker's heartbeat then runs the
        # recover script, which queues the task again and drops the worker.
        ghost_id = uuid.uuid4().hex
        ghost = TaskMessage(ghost_id, sec_tasks.add.name, (7, 7))
        keys = acl_queue.keys
        admin.hset(keys.tasks, ghost_id, ghost.encode(1 << 20))
        admin.hset(keys.claims, ghost_id, "1:ghost-worker")
        admin.zadd(keys.inflight, {ghost_id: 0})
        admin.zadd(keys.workers, {"ghost-worker": 0})
        assert manager.result(ghost_id, timeout=30) == 14
        wait_until(lambda: admin.zscore(keys.workers, "ghost-worker") is None)

        stats = manager.stats()
        metrics = manager.metrics()
    queued = 1 + 20 + 2 + 1 + 1 + 1 + 1
    assert stats.completed_tasks == queued
    assert stats.retried_tasks == 1
    assert stats.failed_tasks == 0
    # The run_task call reached Redis through the producer's metrics script.
    assert metrics.total_tasks_completed == queued + 1

    assert stop_gracefully(worker) == 0
    assert admin.zcard(acl_queue.keys.workers) == 0
    assert acl_queue.denials() == []
    output = worker.log()
    assert WORKER_PASSWORD not in output


@pytest.mark.parametrize(
    ("rule", "command", "error"),
    [
        # The server check at connect names the docs to read.
        ("+info", "info", RedisUnavailableError),
        ("+evalsha", "evalsha", redis.exceptions.NoPermissionError),
        ("+blmove", "blmove", redis.exceptions.NoPermissionError),
    ],
)
def test_acl_producer_missing_command(
    acl_queue: AclQueue, rule: str, command: str, error: type[Exception]
) -> None:
    acl_queue.set_user(without(acl_queue.producer_acl(), rule))
    with pytest.raises(error) as caught:
        queue_one(acl_queue)
    assert f"no permissions to run the '{command}' command" in str(caught.value)
    assert acl_queue.denials() == [command]


def test_acl_script_command_denied(acl_queue: AclQueue) -> None:
    acl_queue.set_user(without(acl_queue.producer_acl(), "+hset"))
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        queue_one(acl_queue)
    assert "can't run this command or subcommand" in str(caught.value)
    assert acl_queue.denials() == ["hset"]


@pytest.mark.xfail(
    strict=True,
    reason="Redis 7.0 names only the script's SHA1 digest, and QueueScripts "
    "passes the error on without naming the script",
)
def test_acl_script_denial_names_script(acl_queue: AclQueue) -> None:
    acl_queue.set_user(without(acl_queue.producer_acl(), "+hset"))
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        queue_one(acl_queue)
    assert "enqueue" in str(caught.value)


def test_acl_other_queue_denied(acl_queue: AclQueue) -> None:
    config = sec_tasks.build_config(redis_url=acl_queue.producer_url, queue="other")
    manager = TaskManager(config)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError) as caught:
            manager.queue_task(sec_tasks.add, 1, 2)
    finally:
        close(manager)
    assert "no permissions to access one of the keys" in str(caught.value)
    # The task and the wait on its result key go out together; both are denied.
    denied = acl_queue.denials()
    assert len(denied) == 2
    assert denied[1] == "tasker:{other}:"
    assert denied[0].startswith("tasker:{other}:result:")


def test_acl_async_denial_fails_future(
    acl_queue: AclQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    acl_queue.set_user(without(acl_queue.producer_acl(), "+evalsha"))
    thread_errors: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    manager = acl_queue.manager()
    try:
        future = manager.queue_task_async(sec_tasks.add, 1, 2)
        error = future.exception(timeout=5)
    finally:
        close(manager)
    assert thread_errors == []
    assert "evalsha" in str(error)


def test_acl_worker_missing_command(
    acl_queue: AclQueue, start_workers: StartWorkers
) -> None:
    acl_queue.set_user(without(acl_queue.worker_acl(), "+rpop"))
    worker = start_queue_workers(start_workers, acl_queue.worker_url)
    with acl_queue.manager() as manager:
        future = manager.queue_task_async(sec_tasks.add, 2, 3)
        assert manager.flush(timeout=10)
        wait_until(lambda: "exited unexpectedly (code 4)" in worker.log())
        assert set(acl_queue.denials()) == {"rpop"}
        assert acl_queue.admin.llen(acl_queue.keys.normal) == 1
        assert not future.done()

        # The task waited in the queue and runs once the right is granted.
        acl_queue.set_user(["tasker-worker", "+rpop"])
        assert future.result(timeout=30) == 5

    assert stop_gracefully(worker) == 0
    output = worker.log()
    assert "can't run this command or subcommand" in output
    assert WORKER_PASSWORD not in output


def test_acl_supervisor_missing_info(
    acl_queue: AclQueue, start_workers: StartWorkers
) -> None:
    acl_queue.set_user(without(acl_queue.worker_acl(), "+info"))
    worker = start_queue_workers(start_workers, acl_queue.worker_url)
    assert worker.wait() == 1
    output = worker.log()
    assert "no permissions to run the 'info' command" in output
    assert WORKER_PASSWORD not in output


# TLS


def test_tls_workflow(
    tls_server: ServerProcess, certificates: Certificates, start_workers: StartWorkers
) -> None:
    url = tls_url(tls_server.port, certificates.ca)
    worker = start_queue_workers(start_workers, url, workers=2)
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    admin = redis.Redis.from_url(url)
    with TaskManager(config) as manager, admin:
        assert manager.queue_task(sec_tasks.add, 2, 3) == 5
        futures = [manager.queue_task_async(sec_tasks.add, i, 1) for i in range(10)]
        assert [future.result(timeout=30) for future in futures] == list(range(1, 11))
        assert manager.stats().completed_tasks == 11

        # The server has no plain-TCP port, so every connection uses TLS.
        assert admin.config_get("port") == {"port": "0"}
        # A worker names each of its connections after its own id.
        wait_until(lambda: len(connection_names(admin, "tasker-worker-")) == 2)
        assert connection_names(admin, "tasker-supervisor") == {"tasker-supervisor"}

    assert stop_gracefully(worker) == 0
    output = worker.log()
    assert f"redis=rediss://:***@127.0.0.1:{tls_server.port}/0?ssl_cert_reqs" in output
    assert PASSWORD not in output


def test_tls_untrusted_ca_rejected(
    tls_server: ServerProcess, certificates: Certificates
) -> None:
    url = tls_url(tls_server.port, certificates.other_ca)
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_tls_hostname_checked(
    tls_server: ServerProcess, certificates: Certificates
) -> None:
    # The certificate names IP 127.0.0.1 only, not the host name localhost.
    url = tls_url(tls_server.port, certificates.ca, host="localhost")
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)
    assert "Hostname mismatch" in str(caught.value)


def test_tls_plain_client_rejected(tls_server: ServerProcess) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{tls_server.port}/0"
    config = sec_tasks.build_config(redis_url=url, queue=QUEUE)
    with pytest.raises(RedisUnavailableError) as caught:
        TaskManager(config)
    assert PASSWORD not in str(caught.value)


def test_tls_client_certificate(
    launch: Callable[..., ServerProcess], certificates: Certificates
) -> None:
    server = start_tls_server(launch, certificates, client_certificates=True)
    with_certificate = tls_url(server.port, certificates.ca, client=certificates)
    config = sec_tasks.build_config(redis_url=with_certificate, queue=QUEUE)
    with TaskManager(config) as manager:
        assert manager.stats().completed_tasks == 0

    without_certificate = tls_url(server.port, certificates.ca)
    config = sec_tasks.build_config(redis_url=without_certificate, queue=QUEUE)
    with pytest.raises(RedisUnavailableError):
        TaskManager(config)


# Untrusted messages: only registered tasks run, and only msgpack is decoded


def test_unregistered_names_not_run(
    acl_queue: AclQueue, start_workers: StartWorkers, tmp_path: Path
) -> None:
    bait = tmp_path / "bait-imported"
    worker = start_queue_workers(
        start_workers, acl_queue.worker_url, SEC_BAIT_MARKER=str(bait)
    )
    producer = redis.Redis.from_url(acl_queue.producer_url)
    cases = {
        "os:system": (tmp_path / "system", lambda path: [f"touch {path}"]),
        "subprocess:run": (tmp_path / "run", lambda path: [["touch", str(path)]]),
        "builtins:exec": (
            tmp_path / "exec",
            lambda path: [f"open({str(path)!r}, 'w').close()"],
        ),
        # Importing apps.sec_bait, which no worker config imports, creates bait.
        "apps.sec_bait:run": (bait, lambda path: []),
    }
    with acl_queue.manager() as manager, producer:
        for name, (marker, arguments) in cases.items():
            task_id = uuid.uuid4().hex
            message = TaskMessage(task_id, name, tuple(arguments(marker)))
            inject(producer, task_id, message.encode(1 << 20))
            with pytest.raises(TaskNotRegistered) as caught:
                manager.result(task_id, timeout=30)
            assert f"task {name!r} is not registered" in str(caught.value)
            assert not marker.exists()

        # The same worker creates a file for a registered task.
        control = tmp_path / "control"
        assert manager.queue_task(sec_tasks.touch, str(control)) == []
        assert control.exists()

    entries = dead_letters(acl_queue.admin)
    assert len(entries) == len(cases)
    for entry, name in zip(entries, cases, strict=True):
        assert entry.reason.startswith(f"task {name!r} is not registered")
    assert stop_gracefully(worker) == 0
    assert acl_queue.denials() == []


def test_untrusted_encodings_rejected(
    acl_queue: AclQueue, start_workers: StartWorkers, tmp_path: Path
) -> None:
    worker = start_queue_workers(start_workers, acl_queue.worker_url)
    touch = sec_tasks.touch.name

    def with_extension(code: int, data: bytes) -> Callable[[str, Path], bytes]:
        def build(task_id: str, path: Path) -> bytes:
            path_value = msgpack.packb(str(path))
            return raw_message(task_id, touch, path_value, extension(code, data))

        return build

    # Each case builds a message whose task would create the file at path,
    # and names the reason the worker must give for rejecting it.
    cases: dict[str, tuple[Callable[[str, Path], bytes], str]] = {
        "extension 3": (with_extension(3, b"x"), "unknown msgpack extension type 3"),
        "extension 127": (
            with_extension(127, b"x"),
            "unknown msgpack extension type 127",
        ),
        "extension -5": (
            with_extension(-5, b"x"),
            "unknown msgpack extension type -5",
        ),
        # msgpack's own timestamp type, which msgpack decodes without ext_hook.
        "extension -1": (
            with_extension(-1, TIMESTAMP),
            "unknown msgpack extension type -1",
        ),
        "pickle": (
            lambda task_id, path: pickle.dumps(SystemCall(f"touch {path}")),
            "not a valid msgpack message",
        ),
    }
    producer = redis.Redis.from_url(acl_queue.producer_url)
    with acl_queue.manager() as manager, producer:
        # A message built the same way with plain arguments runs the task.
        control = tmp_path / "control"
        task_id = uuid.uuid4().hex
        message = raw_message(task_id, touch, msgpack.packb(str(control)))
        inject(producer, task_id, message)
        assert manager.result(task_id, timeout=30) == []
        assert control.exists()

        for label, (build, reason) in cases.items():
            marker = tmp_path / label.replace(" ", "-")
            task_id = uuid.uuid4().hex
            inject(producer, task_id, build(task_id, marker))
            with pytest.raises(TaskDeadLettered) as caught:
                manager.result(task_id, timeout=30)
            assert reason in str(caught.value)
            assert not marker.exists()

    entries = dead_letters(acl_queue.admin)
    assert len(entries) == len(cases)
    assert stop_gracefully(worker) == 0
    assert acl_queue.denials() == []


def test_reply_to_outside_queue_dead_lettered(
    redis_url: str, redis_client: redis.Redis, start_workers: StartWorkers
) -> None:
    start_queue_workers(start_workers, redis_url)
    task_id = uuid.uuid4().hex
    message = TaskMessage(task_id, sec_tasks.add.name, (1, 2), reply_to="victim")
    config = sec_tasks.build_config(redis_url=redis_url, queue=QUEUE)
    with TaskManager(config) as manager:
        inject(redis_client, task_id, message.encode(1 << 20))
        with pytest.raises(TaskDeadLettered) as caught:
            manager.result(task_id, timeout=30)
    assert "reply_to 'victim' is not an inbox" in str(caught.value)
    assert redis_client.exists("victim") == 0


def test_reply_to_denied_queue_continues(
    acl_queue: AclQueue, start_workers: StartWorkers
) -> None:
    start_queue_workers(start_workers, acl_queue.worker_url)
    task_id = uuid.uuid4().hex
    message = TaskMessage(task_id, sec_tasks.add.name, (1, 2), reply_to="victim")
    manager = acl_queue.manager()
    try:
        inject(acl_queue.admin, task_id, message.encode(1 << 20))
        future = manager.queue_task_async(sec_tasks.add, 2, 2)
        assert future.result(timeout=10) == 4
    finally:
        close(manager)
