"""compose.yaml and the Dockerfile: services, commands and the modules they run.

Docker is not needed. PyYAML is not a dependency, so a small reader parses
the subset of YAML that compose.yaml uses.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tasker_redis_cli.options import load_config

from examples import file_stats
from tasker_redis import Config

ROOT = Path(__file__).resolve().parents[2]

# Docker's stop_grace_period when a service sets none.
DOCKER_DEFAULT_GRACE_SECONDS = 10


def parse_scalar(text: str) -> Any:
    """Return a flow sequence or a quoted string as JSON reads it, else the text."""
    if text.startswith(("[", '"')):
        return json.loads(text)
    return text


def parse_compose_yaml(text: str) -> dict[str, Any]:
    """Parse block mappings, block sequences of scalars and JSON-like flow lists.

    Raises:
        ValueError: A line uses YAML outside that subset.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.strip()
        if content and not content.startswith("#"):
            entries.append((number, len(line) - len(line.lstrip(" ")), content))

    root: dict[str, Any] = {}
    stack: list[tuple[int, Any]] = [(-1, root)]
    for index, (number, indent, content) in enumerate(entries):
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if content.startswith("- "):
            if not isinstance(parent, list):
                raise ValueError(f"line {number}: unexpected list item")
            parent.append(parse_scalar(content[2:].strip()))
            continue
        key, colon, value = content.partition(":")
        if not colon or not isinstance(parent, dict) or " #" in value:
            raise ValueError(f"line {number}: unsupported YAML: {content!r}")
        if value.strip():
            parent[key] = parse_scalar(value.strip())
            continue
        following = entries[index + 1] if index + 1 < len(entries) else None
        if following is None or following[1] <= indent:
            parent[key] = None
            continue
        child: list[Any] | dict[str, Any] = [] if following[2].startswith("- ") else {}
        parent[key] = child
        stack.append((indent, child))
    return root


def duration_seconds(text: str) -> float:
    """Convert a compose duration such as "1m30s" or "60s" to seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_compose_yaml((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def test_reader_parses_subset() -> None:
    text = '# comment\na:\n  b: text\n  c: ["x", "y"]\n  d:\n    - item\n  e:\nf: 1\n'

    assert parse_compose_yaml(text) == {
        "a": {"b": "text", "c": ["x", "y"], "d": ["item"], "e": None},
        "f": "1",
    }


def test_reader_rejects_inline_comment() -> None:
    with pytest.raises(ValueError, match="line 1: unsupported YAML"):
        parse_compose_yaml("a: b # comment\n")


def test_duration_parses_units() -> None:
    assert duration_seconds("60s") == 60
    assert duration_seconds("1m30s") == 90
    with pytest.raises(ValueError, match="invalid duration"):
        duration_seconds("60")


def test_compose_services(services: dict[str, Any]) -> None:
    assert set(services) == {"redis", "worker", "producer"}


def test_redis_service(compose: dict[str, Any], services: dict[str, Any]) -> None:
    redis_service = services["redis"]
    command = redis_service["command"]

    assert redis_service["image"] == "redis:7"
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis_service["volumes"] == ["redis-data:/data"]
    assert "redis-data" in compose["volumes"]
    assert redis_service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


@pytest.mark.parametrize("name", ["worker", "producer"])
def test_client_service_connects(services: dict[str, Any], name: str) -> None:
    service = services[name]
    url = urlsplit(service["environment"]["TASKER_REDIS_URL"])

    assert service["build"] == "."
    assert url.scheme == "redis"
    assert url.hostname == "redis"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_service(services: dict[str, Any]) -> None:
    worker = services["worker"]

    assert worker["command"] == ["tasker", "worker", "examples.file_stats:config"]
    assert worker["stop_signal"] == "SIGTERM"
    grace = duration_seconds(worker["stop_grace_period"])
    assert grace > DOCKER_DEFAULT_GRACE_SECONDS


def test_tasker_command_installed() -> None:
    entry_points = importlib.metadata.distribution("tasker-redis").entry_points
    tasker = [entry for entry in entry_points if entry.name == "tasker"]

    assert len(tasker) == 1
    assert tasker[0].group == "console_scripts"
    assert callable(tasker[0].load())


def test_worker_spec_loads(services: dict[str, Any]) -> None:
    spec = services["worker"]["command"][2]
    config = load_config(spec)

    assert isinstance(config, Config)
    assert config.on_create is file_stats.FileReader


def test_producer_command(services: dict[str, Any]) -> None:
    command = services["producer"]["command"]
    args = file_stats.parse_args(command[3:])

    assert command[:3] == ["python", "-m", "examples.file_stats"]
    assert importlib.util.find_spec(command[2]) is not None
    assert args.workers == 0


def test_dockerfile() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith("#")]

    assert instructions[0] == "FROM python:3.11-slim"
    assert "WORKDIR /app" in instructions
    assert "COPY . ." in instructions
    assert any(line.startswith("RUN pip install --no-cache-dir . ") for line in lines)
