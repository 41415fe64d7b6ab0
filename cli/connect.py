"""Connecting an operator command to a queue, and reporting its errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click
import redis

from tasker_redis import TaskerError
from tasker_redis.admin import QueueAdmin
from tasker_redis.config import QUEUE_NAME_PATTERN, Config, default_redis_url
from tasker_redis.connection import check_server, create_client
from tasker_redis.errors import ConfigError
from tasker_redis.keys import QueueKeys


def _no_resource() -> None:
    return None


def _discard(resource: Any) -> None:
    return None


def queue_config(redis_url: str | None, queue: str | None) -> Config:
    """Build a Config for a queue, from the --redis-url and --queue values.

    Operator commands run no tasks, so the resource hooks do nothing.

    Raises:
        click.BadParameter: The queue name or the URL is invalid.
    """
    settings: dict[str, Any] = {"redis_url": redis_url or default_redis_url()}
    if queue is not None:
        settings["queue"] = queue
    try:
        return Config(on_create=_no_resource, on_destroy=_discard, **settings)
    except ConfigError as exc:
        bad_queue = queue is not None and not QUEUE_NAME_PATTERN.fullmatch(queue)
        raise click.BadParameter(
            str(exc), param_hint="'--queue'" if bad_queue else "'--redis-url'"
        ) from exc


@contextlib.contextmanager
def reported_errors(config: Config) -> Iterator[None]:
    """Turn library and Redis errors into click errors that exit 1."""
    try:
        yield
    except TaskerError as exc:
        raise click.ClickException(str(exc)) from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise click.ClickException(
            f"lost the connection to Redis at {config.masked_redis_url}: {exc}; "
            "check that the server is running and run the command again"
        ) from exc
    except redis.RedisError as exc:
        raise click.ClickException(
            f"Redis at {config.masked_redis_url} returned an error: {exc}"
        ) from exc


@contextlib.contextmanager
def open_admin(redis_url: str | None, queue: str | None) -> Iterator[QueueAdmin]:
    """Connect to the queue and yield a QueueAdmin for it.

    Raises:
        click.BadParameter: The queue name or the URL is invalid.
        click.ClickException: Redis cannot be reached, or a library or Redis
            error happened inside the block.
    """
    config = queue_config(redis_url, queue)
    try:
        client = create_client(config, name="tasker-admin")
    except ValueError as exc:
        raise click.BadParameter(
            f"invalid Redis URL {config.masked_redis_url!r}: {exc}",
            param_hint="'--redis-url'",
        ) from exc
    try:
        with reported_errors(config):
            check_server(client, config)
            yield QueueAdmin(
                client,
                QueueKeys(config.queue),
                alive_window=config.lease_timeout,
                max_payload_size=config.max_payload_size,
            )
    finally:
        client.close()
