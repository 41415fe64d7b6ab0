"""Options shared by every `tasker` command, and loading the user's Config."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tasker_redis import Config, Task, TaskManager
from tasker_redis.config import REDIS_URL_ENV

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(function: F) -> F:
    """Add --redis-url (env TASKER_REDIS_URL) and --queue to a command."""
    function = click.option(
        "--queue",
        "-q",
        default=None,
        help='Queue name; overrides a Config\'s queue, and is "default" for '
        "commands without a Config.",
    )(function)
    function = click.option(
        "--redis-url",
        envvar=REDIS_URL_ENV,
        default=None,
        help="Redis server URL, e.g. redis://127.0.0.1:6379/0; overrides a "
        f"Config's redis_url. Env: {REDIS_URL_ENV}.",
    )(function)
    return function


def load_config(spec: str) -> Config:
    """Import MODULE:ATTRIBUTE and return the Config it names.

    The attribute may be a Config, a TaskManager, or a function without
    arguments that returns a Config. Importing the module registers its tasks.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(
            f"{spec!r} is not MODULE:ATTRIBUTE; pass e.g. myapp.jobs:config",
            param_hint="MODULE:ATTRIBUTE",
        )
    # Like `python -m`, find modules in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import module {module_name!r}: {exc}; run tasker from the "
            "directory that contains it or add that directory to PYTHONPATH",
            param_hint="MODULE:ATTRIBUTE",
        ) from exc
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attribute!r}",
            param_hint="MODULE:ATTRIBUTE",
        ) from None
    if isinstance(value, TaskManager):
        value = value.config
    elif callable(value) and not isinstance(value, (Config, Task)):
        value = _call_factory(spec, value)
    if not isinstance(value, Config):
        raise click.BadParameter(
            f"{spec} is not a tasker_redis.Config but {type(value).__name__} "
            f"{value!r}; point it at a Config, or a function that returns one",
            param_hint="MODULE:ATTRIBUTE",
        )
    return value


def _call_factory(spec: str, factory: Callable[[], Any]) -> Any:
    try:
        inspect.signature(factory).bind()
    except (TypeError, ValueError):
        raise click.BadParameter(
            f"{spec} is a function that takes arguments; point it at a Config, "
            "or a function without arguments that returns one",
            param_hint="MODULE:ATTRIBUTE",
        ) from None
    return factory()


def apply_overrides(config: Config, **overrides: Any) -> Config:
    """Return config with every override that is not None applied."""
    changes = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(config, **changes) if changes else config
