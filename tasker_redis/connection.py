"""Redis clients built from a Config, and the reconnect backoff."""

from __future__ import annotations

import logging
import random
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

from tasker_redis.config import Config
from tasker_redis.errors import RedisUnavailableError

logger = logging.getLogger(__name__)

# Errors after which a caller should reconnect and try again.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)

# Times redis-py sends a command again after a connection error, on a client
# created with resend=True.
CLIENT_RESENDS = 3

# Oldest server with every command the scripts and waits use (BLMOVE, LPOP count).
MIN_SERVER_VERSION = (6, 2)


def create_client(
    config: Config, *, name: str = "tasker", resend: bool = True
) -> redis.Redis:
    """Create a client for config.redis_url with tasker's timeouts.

    Args:
        config: Queue settings.
        name: The connection name that CLIENT LIST shows.
        resend: Let redis-py resend a command up to three times after a
            connection error. Only for commands that are safe to run twice
            unseen: a resent claim or BLPOP would take items whose first
            reply was lost, so workers and the result listener pass False and
            handle the error themselves.
    """
    if resend:
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), CLIENT_RESENDS)
    else:
        retry = Retry(NoBackoff(), 0)

    def connect(connection: Any) -> None:
        # redis-py reconnects a pooled connection on its next use without a
        # word; this logs every connect after a connection's first.
        connection.on_connect()
        if getattr(connection, "_tasker_connected", False):
            logger.warning(
                "%s reconnected to Redis at %s", name, config.masked_redis_url
            )
        connection._tasker_connected = True

    # TCP keepalive helps notice dead peers; Unix sockets reject the option.
    tcp: dict[str, Any] = {}
    if not config.redis_url.startswith("unix:"):
        tcp["socket_keepalive"] = True
    return redis.Redis.from_url(
        config.redis_url,
        socket_timeout=config.socket_timeout,
        socket_connect_timeout=min(5.0, config.socket_timeout),
        **tcp,
        # No health_check_interval: with it, redis-py 8.2 recurses until
        # RecursionError when the server rejects the first command with
        # NOAUTH, instead of raising AuthenticationError.
        retry=retry,
        redis_connect_func=connect,
        client_name=name,
    )


def check_server(client: redis.Redis, config: Config) -> None:
    """Ping the server and check its version.

    Raises:
        RedisUnavailableError: The server cannot be reached or is too old.
    """
    try:
        info = client.info("server")
    except redis.exceptions.NoPermissionError as exc:
        raise RedisUnavailableError(
            f"the Redis user of {config.masked_redis_url} lacks a permission: {exc}; "
            "grant the commands listed in docs/security.md"
        ) from exc
    except redis.AuthenticationError as exc:
        raise RedisUnavailableError(
            f"Redis at {config.masked_redis_url} rejected the credentials: {exc}; "
            "check the user and password in the URL"
        ) from exc
    except CONNECTION_ERRORS as exc:
        raise RedisUnavailableError(
            f"cannot connect to Redis at {config.masked_redis_url}: {exc}; start a "
            "server there, or point TASKER_REDIS_URL or --redis-url at one"
        ) from exc
    version = str(info.get("redis_version", "0"))
    parts = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if parts < MIN_SERVER_VERSION:
        raise RedisUnavailableError(
            f"Redis at {config.masked_redis_url} is version {version}; tasker-redis "
            "needs 6.2 or newer"
        )


class Backoff:
    """Capped exponential delays with full jitter, for reconnect loops."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before retrying."""
        ceiling = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0
