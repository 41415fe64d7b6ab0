"""The @task decorator and the registry of task names a process can run."""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from tasker_redis.errors import TaskerError, TaskNotRegistered

R = TypeVar("R")

_registry: dict[str, Task[Any]] = {}
_registry_lock = threading.Lock()


class Task(Generic[R]):
    """A registered task function.

    Calling a Task calls the function directly, in this process. Queue it
    with a TaskManager to run it on a worker.

    Attributes:
        name: The registered name that messages carry.
        function: The decorated function, `fn(ctx, resource, *args, **kwargs)`.
        timeout: Seconds a run may take on a worker before it is stopped, or
            None for no limit.
    """

    def __init__(
        self, function: Callable[..., R], name: str, timeout: float | None = None
    ) -> None:
        self.function = function
        self.name = name
        self.timeout = timeout
        self.signature = inspect.signature(function)
        self._valid_shapes: set[tuple[int, frozenset[str]]] = set()
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError if args and kwargs do not fit the function's signature."""
        # Whether a call binds depends only on the number of positional
        # arguments and the keyword names, so shapes that bound once are kept.
        shape = (len(args), frozenset(kwargs))
        if shape in self._valid_shapes:
            return
        try:
            self.signature.bind(None, None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"invalid arguments for task {self.name!r}{self.signature}: {exc}"
            ) from exc
        self._valid_shapes.add(shape)


def _default_name(function: Callable[..., Any]) -> str:
    module = function.__module__
    if module == "__main__":
        # A script run as `python path/to/jobs.py` is "__main__" here but
        # "jobs" in a worker that imports it, so use the importable name.
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        else:
            path = getattr(main, "__file__", "") or ""
            stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            module = stem or module
    return f"{module}:{function.__qualname__}"


def check_timeout(timeout: object) -> float | None:
    """Return a valid task timeout in seconds, or raise TaskerError naming it."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TaskerError(f"invalid task timeout {timeout!r}: pass seconds as a number")
    if not timeout > 0:
        raise TaskerError(f"invalid task timeout {timeout!r}: it must be above 0")
    return float(timeout)


def _register(
    function: Callable[..., R], name: str | None, timeout: float | None = None
) -> Task[R]:
    qualname = getattr(function, "__qualname__", "")
    # A "<" marks a lambda or a closure, a "." a function defined in a class.
    if not inspect.isfunction(function) or "<" in qualname or "." in qualname:
        raise TaskerError(
            f"cannot register {function!r} as a task: workers look tasks up by "
            "name, so a task must be a function defined with def at module "
            "level, not a lambda, a closure or a method"
        )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise TaskerError(f"invalid task name {name!r}: use a non-empty string")
    task_name = name if name is not None else _default_name(function)
    registered = Task(function, task_name, check_timeout(timeout))
    with _registry_lock:
        existing = _registry.get(task_name)
        if existing is not None and _same_function(existing.function, function):
            existing.timeout = registered.timeout
            return existing
        if existing is not None:
            raise TaskerError(
                f"task name {task_name!r} is already registered for "
                f"{existing.function.__module__}.{existing.function.__qualname__}: "
                "pass a different name with @task(name=...)"
            )
        _registry[task_name] = registered
    return registered


def _same_function(first: Callable[..., Any], second: Callable[..., Any]) -> bool:
    # A module imported twice (as a script and by name) defines the function
    # twice. Treat that as the same task rather than a name clash.
    return bool(
        first.__qualname__ == second.__qualname__
        and first.__code__.co_filename == second.__code__.co_filename
    )


@overload
def task(function: Callable[..., R], /) -> Task[R]: ...


@overload
def task(
    *, name: str | None = None, timeout: float | None = None
) -> Callable[[Callable[..., R]], Task[R]]: ...


def task(
    function: Callable[..., R] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Task[R] | Callable[[Callable[..., R]], Task[R]]:
    """Register a module-level function as a task.

    Use it bare (`@task`), which names the task "<module>:<qualname>", or with
    a stable name (`@task(name="images.thumbnail")`) that survives moving the
    function to another module. The function receives a TaskContext, the
    worker's resource, then the arguments given when the task was queued.

    With `timeout` (seconds), a run on a worker that lasts longer fails with
    TaskTimeout. The task's TaskContext reports `cancelled` at the deadline,
    and a task that ignores it has its worker process killed shortly after
    and replaced, with a new resource.

    Raises:
        TaskerError: The function is a lambda, closure or method, the name is
            already taken by another function, or the timeout is not a
            positive number.
    """
    if function is not None:
        return _register(function, name, timeout)

    def decorate(inner: Callable[..., R]) -> Task[R]:
        return _register(inner, name, timeout)

    return decorate


def lookup(name: str) -> Task[Any]:
    """Return the task registered under name.

    Raises:
        TaskNotRegistered: No task has that name in this process.
    """
    found = _registry.get(name)
    if found is None:
        known = ", ".join(sorted(_registry)) or "none"
        raise TaskNotRegistered(
            f"task {name!r} is not registered in this process (registered: {known}); "
            "import the module that defines it with @task before queueing or "
            "running it",
            task_name=name,
        )
    return found


def resolve(task_or_name: Task[R] | str) -> tuple[str, Task[R] | None]:
    """Return the name of a task and its Task object if this process has it.

    A producer may queue a task by name without importing its code, so an
    unknown name is accepted here and only workers reject it.

    Raises:
        TaskerError: task_or_name is a function that was not decorated with @task.
    """
    if isinstance(task_or_name, Task):
        return task_or_name.name, task_or_name
    if isinstance(task_or_name, str):
        return task_or_name, _registry.get(task_or_name)
    raise TaskerError(
        f"{task_or_name!r} is not a registered task: decorate it with @task, or "
        "pass its registered name as a string"
    )


def registered_names() -> list[str]:
    """Return the sorted names of all tasks registered in this process."""
    return sorted(_registry)
