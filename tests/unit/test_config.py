"""Validation, defaults and URL masking in config.py."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tasker_redis.config import (
    DEFAULT_REDIS_URL,
    REDIS_URL_ENV,
    Config,
    default_redis_url,
    mask_url,
)
from tasker_redis.errors import ConfigError


def create_resource() -> object:
    return object()


def destroy_resource(resource: object) -> None:
    return None


def make_config(**overrides: Any) -> Config:
    return Config(on_create=create_resource, on_destroy=destroy_resource, **overrides)


# Valid settings


def test_config_defaults_are_valid() -> None:
    config = make_config(redis_url="redis://127.0.0.1:6379/0")

    assert config.worker_count == 1
    assert config.worker_threads == 1
    assert config.queue == "default"
    assert config.pool_size == 1
    assert config.heartbeat_interval == pytest.approx(10.0 / 3)


def test_config_pool_size_defaults_to_workers() -> None:
    assert make_config(worker_count=4).pool_size == 4


def test_config_pool_size_explicit() -> None:
    assert make_config(worker_count=4, resource_pool_size=0).pool_size == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"max_retries": 0, "max_crashes": 0},
        {"lease_timeout": 0.3},
        {"result_ttl": 0.001},
        {"block_timeout": 9.99, "socket_timeout": 10},
        {"queue": "A-z_0.9"},
        {"queue": "q" * 64},
        {"redis_url": "rediss://127.0.0.1:6380/1"},
        {"redis_url": "unix:///tmp/redis.sock"},
        {"check_health": lambda error: True},
        {"max_payload_size": 1},
    ],
)
def test_config_accepts_boundary_values(overrides: dict[str, Any]) -> None:
    config = make_config(**overrides)

    for name, value in overrides.items():
        assert getattr(config, name) == value


# Invalid settings


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("worker_count", 0, "worker_count must be at least 1, got 0"),
        ("worker_count", -2, "worker_count must be at least 1, got -2"),
        ("worker_count", 1.5, "worker_count must be an integer, got 1.5"),
        ("worker_count", True, "worker_count must be an integer, got True"),
        ("worker_count", "2", "worker_count must be an integer, got '2'"),
        ("worker_threads", 0, "worker_threads must be at least 1, got 0"),
        ("worker_threads", 2.0, "worker_threads must be an integer, got 2.0"),
        ("max_retries", -1, "max_retries must be at least 0, got -1"),
        ("max_retries", None, "max_retries must be an integer, got None"),
        ("max_crashes", -1, "max_crashes must be at least 0, got -1"),
        ("max_crashes", 2.0, "max_crashes must be an integer, got 2.0"),
        ("max_payload_size", 0, "max_payload_size must be at least 1, got 0"),
        ("max_payload_size", False, "max_payload_size must be an integer, got False"),
        ("resource_pool_size", -1, "resource_pool_size must be at least 0, got -1"),
        ("resource_pool_size", "4", "resource_pool_size must be an integer, got '4'"),
    ],
)
def test_config_rejects_count(name: str, value: Any, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(**{name: value})

    assert str(caught.value) == reason


@pytest.mark.parametrize(
    "name", ["result_ttl", "lease_timeout", "block_timeout", "socket_timeout"]
)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "must be greater than 0, got 0"),
        (-1.5, "must be greater than 0, got -1.5"),
        (math.nan, "must be greater than 0, got nan"),
        ("10", "must be a number of seconds, got '10'"),
        (None, "must be a number of seconds, got None"),
        (True, "must be a number of seconds, got True"),
    ],
)
def test_config_rejects_duration(name: str, value: Any, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(**{name: value})

    assert str(caught.value) == f"{name} {reason}"


@pytest.mark.parametrize("name", ["result_ttl", "lease_timeout", "socket_timeout"])
def test_config_rejects_infinite_duration(name: str) -> None:
    # Worker converts result_ttl and lease_timeout to integer milliseconds,
    # and socket.settimeout(math.inf) raises OverflowError, so an infinite
    # value passes here and fails later with an unclear error.
    with pytest.raises(ConfigError, match=name):
        make_config(**{name: math.inf})


def test_config_rejects_short_result_ttl() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(result_ttl=0.0005)

    assert str(caught.value) == "result_ttl must be at least 0.001 seconds, got 0.0005"


def test_config_rejects_short_lease_timeout() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(lease_timeout=0.29)

    assert str(caught.value) == "lease_timeout must be at least 0.3 seconds, got 0.29"


@pytest.mark.parametrize(("socket_timeout", "block_timeout"), [(1.0, 1.0), (2, 5)])
def test_config_rejects_socket_timeout_below_block(
    socket_timeout: float, block_timeout: float
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(socket_timeout=socket_timeout, block_timeout=block_timeout)

    text = str(caught.value)
    assert f"socket_timeout ({socket_timeout!r}) must be greater than" in text
    assert f"block_timeout ({block_timeout!r})" in text


@pytest.mark.parametrize(
    "queue",
    ["", "q" * 65, "has space", "brace{", "colon:q", "slash/q", "é", "q\n", 5],
)
def test_config_rejects_queue_name(queue: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(queue=queue)

    text = str(caught.value)
    assert f"invalid queue name {queue!r}" in text
    assert "1 to 64 letters, digits" in text


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:6379/0", "127.0.0.1:6379", "", "valkey://127.0.0.1:6379/0"],
)
def test_config_rejects_url_scheme(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(redis_url=url)

    text = str(caught.value)
    assert f"invalid redis_url {url!r}" in text
    assert "redis://, rediss:// or unix://" in text


def test_config_rejects_non_string_url() -> None:
    with pytest.raises(ConfigError, match="invalid redis_url '6379'"):
        make_config(redis_url=6379)


def test_config_url_error_masks_password() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(redis_url="http://user:hunter2@127.0.0.1:6379/0")

    assert "hunter2" not in str(caught.value)
    assert "http://user:***@127.0.0.1:6379/0" in str(caught.value)


@pytest.mark.parametrize("name", ["on_create", "on_destroy"])
def test_config_rejects_non_callable_hook(name: str) -> None:
    hooks: dict[str, Any] = {
        "on_create": create_resource,
        "on_destroy": destroy_resource,
    }
    hooks[name] = "not a function"

    with pytest.raises(ConfigError) as caught:
        Config(**hooks)

    assert str(caught.value) == f"{name} must be callable, got 'not a function'"


def test_config_rejects_non_callable_check() -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(check_health=True)

    assert str(caught.value) == "check_health must be callable or None, got True"


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError):
        make_config(worker_count=0)


# Redis URL defaults and masking


def test_default_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:7000/3")

    assert default_redis_url() == "redis://127.0.0.1:7000/3"
    assert make_config().redis_url == "redis://127.0.0.1:7000/3"


def test_default_url_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)

    assert make_config().redis_url == DEFAULT_REDIS_URL
    assert DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"


def test_default_url_empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, "")

    assert default_redis_url() == DEFAULT_REDIS_URL


def test_explicit_url_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:7000/3")

    assert make_config(redis_url="redis://127.0.0.1:7001/4").redis_url == (
        "redis://127.0.0.1:7001/4"
    )


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:secret@127.0.0.1:6380/2", "redis://user:***@127.0.0.1:6380/2"),
        ("redis://:secret@127.0.0.1:6380/2", "redis://:***@127.0.0.1:6380/2"),
        ("rediss://admin:p%40ss@localhost/5", "rediss://admin:***@localhost/5"),
        ("redis://:secret@127.0.0.1/0?timeout=5", "redis://:***@127.0.0.1/0?timeout=5"),
    ],
)
def test_mask_url_hides_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user@127.0.0.1:6379/0",
        "unix:///tmp/redis.sock",
    ],
)
def test_mask_url_without_password_unchanged(url: str) -> None:
    assert mask_url(url) == url


def test_mask_url_keeps_ipv6_brackets() -> None:
    assert mask_url("redis://:secret@[::1]:6379/0") == "redis://:***@[::1]:6379/0"


def test_mask_url_hides_query_password() -> None:
    # redis-py reads ?password= from the URL like the password before "@".
    masked = mask_url("redis://127.0.0.1:6379/0?password=secret")

    assert "secret" not in masked


def test_mask_url_invalid_url() -> None:
    assert mask_url("redis://[::1/0") == "<invalid URL>"


def test_config_masked_redis_url() -> None:
    config = make_config(redis_url="redis://user:secret@127.0.0.1:6380/2")

    assert config.masked_redis_url == "redis://user:***@127.0.0.1:6380/2"
