"""The @task decorator, lookup and resolve in registry.py.

The registry is global to the process, so every test registers under a name
of its own, starting with "unit.registry.".
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from tasker_redis.errors import TaskerError, TaskNotRegistered
from tasker_redis.registry import (
    Task,
    check_timeout,
    lookup,
    registered_names,
    resolve,
    task,
)


def add(ctx: Any, resource: Any, a: int, b: int = 0) -> int:
    """Add two numbers."""
    return a + b


def subtract(ctx: Any, resource: Any, a: int, b: int) -> int:
    return a - b


def keyword_only(ctx: Any, resource: Any, *, flag: bool) -> bool:
    return flag


def make_closure() -> Any:
    def inner(ctx: Any, resource: Any) -> None:
        return None

    return inner


class Jobs:
    def run(self, ctx: Any, resource: Any) -> None:
        return None


@task
def decorated_bare(ctx: Any, resource: Any) -> str:
    return "bare"


@task(name="unit.registry.decorated-named")
def decorated_named(ctx: Any, resource: Any) -> str:
    return "named"


def copy_function(function: Any, module: str, qualname: str) -> Any:
    """Return a new function object with function's code in another module."""
    copy = types.FunctionType(function.__code__, {"__name__": module}, qualname)
    copy.__qualname__ = qualname
    return copy


# Registration


def test_task_bare_uses_module_qualname() -> None:
    assert decorated_bare.name == f"{__name__}:decorated_bare"


def test_task_bare_is_registered() -> None:
    assert lookup(f"{__name__}:decorated_bare") is decorated_bare


def test_task_named_uses_given_name() -> None:
    assert decorated_named.name == "unit.registry.decorated-named"
    assert lookup("unit.registry.decorated-named") is decorated_named


def test_task_call_runs_function() -> None:
    assert decorated_bare(None, None) == "bare"


def test_task_keeps_function_details() -> None:
    registered = task(name="unit.registry.details")(add)

    assert registered.function is add
    assert registered.__wrapped__ is add
    assert registered.__doc__ == "Add two numbers."
    assert repr(registered) == "<Task 'unit.registry.details'>"


def test_task_main_module_uses_spec_name(monkeypatch: pytest.MonkeyPatch) -> None:
    script = types.ModuleType("__main__")
    script.__spec__ = types.SimpleNamespace(name="jobs_by_spec")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", script)
    function = copy_function(add, "__main__", "unit_registry_spec_add")

    registered = task(function)

    assert registered.name == "jobs_by_spec:unit_registry_spec_add"


def test_task_main_module_uses_file_stem(monkeypatch: pytest.MonkeyPatch) -> None:
    script = types.ModuleType("__main__")
    script.__spec__ = None
    script.__file__ = "/srv/app/jobs_by_file.py"
    monkeypatch.setitem(sys.modules, "__main__", script)
    function = copy_function(add, "__main__", "unit_registry_file_add")

    registered = task(function)

    assert registered.name == "jobs_by_file:unit_registry_file_add"


def test_task_rejects_lambda() -> None:
    with pytest.raises(TaskerError) as caught:
        task(name="unit.registry.lambda")(lambda ctx, resource: None)

    text = str(caught.value)
    assert "cannot register" in text
    assert "defined with def at module level" in text
    assert "not a lambda" in text


def test_task_rejects_closure() -> None:
    with pytest.raises(TaskerError) as caught:
        task(name="unit.registry.closure")(make_closure())

    assert "defined with def at module level" in str(caught.value)
    assert "inner" in str(caught.value)


def test_task_rejects_nested_function() -> None:
    def nested(ctx: Any, resource: Any) -> None:
        return None

    with pytest.raises(TaskerError, match="defined with def at module level"):
        task(nested)


def test_task_rejects_bound_method() -> None:
    with pytest.raises(TaskerError) as caught:
        task(name="unit.registry.bound-method")(Jobs().run)

    assert "defined with def at module level" in str(caught.value)
    assert "method" in str(caught.value)


def test_task_rejects_method_in_class_body() -> None:
    # Inside a class body, @task receives the plain function Jobs.run, whose
    # qualname has a dot but no "<". A worker would pass the context as self.
    function = Jobs.__dict__["run"]

    with pytest.raises(TaskerError, match="defined with def at module level"):
        task(name="unit.registry.class-body")(function)


def test_task_rejects_non_function() -> None:
    with pytest.raises(TaskerError, match="cannot register"):
        task(name="unit.registry.builtin")(len)


@pytest.mark.parametrize("name", ["", "   ", 5, b"bytes"])
def test_task_rejects_invalid_name(name: Any) -> None:
    with pytest.raises(TaskerError, match="invalid task name"):
        task(name=name)(subtract)


def test_task_rejects_name_of_other_function() -> None:
    task(name="unit.registry.taken")(add)

    with pytest.raises(TaskerError) as caught:
        task(name="unit.registry.taken")(subtract)

    text = str(caught.value)
    assert "'unit.registry.taken' is already registered" in text
    assert f"{__name__}.add" in text
    assert "@task(name=...)" in text
    assert lookup("unit.registry.taken").function is add


def test_task_same_function_twice_returns_task() -> None:
    first = task(name="unit.registry.twice")(add)

    second = task(name="unit.registry.twice")(add)

    assert second is first


def test_task_reimported_function_returns_task() -> None:
    # A module run as a script and imported by name defines its functions
    # twice, with the same qualname and file.
    first = task(name="unit.registry.reimported")(add)
    copy = copy_function(add, "other_module", "add")

    second = task(name="unit.registry.reimported")(copy)

    assert second is first


def test_task_timeout_is_stored() -> None:
    registered = task(name="unit.registry.timeout", timeout=2)(subtract)

    assert registered.timeout == 2.0
    assert isinstance(registered.timeout, float)


def test_task_without_timeout_has_none() -> None:
    registered = task(name="unit.registry.no-timeout")(subtract)

    assert registered.timeout is None


@pytest.mark.parametrize("timeout", [0, -1, "5", True, float("nan")])
def test_check_timeout_rejects_value(timeout: Any) -> None:
    with pytest.raises(TaskerError, match="invalid task timeout"):
        check_timeout(timeout)


def test_task_rejects_invalid_timeout() -> None:
    with pytest.raises(TaskerError, match="invalid task timeout -3"):
        task(name="unit.registry.bad-timeout", timeout=-3)(subtract)

    assert "unit.registry.bad-timeout" not in registered_names()


# Lookup and resolve


def test_lookup_unknown_name_lists_registered() -> None:
    task(name="unit.registry.listed")(add)

    with pytest.raises(TaskNotRegistered) as caught:
        lookup("unit.registry.missing")

    text = str(caught.value)
    assert "task 'unit.registry.missing' is not registered" in text
    assert "unit.registry.listed" in text
    assert "import the module that defines it" in text
    assert caught.value.task_name == "unit.registry.missing"


def test_registered_names_sorted() -> None:
    task(name="unit.registry.sorted-b")(add)
    task(name="unit.registry.sorted-a")(add)

    names = registered_names()

    assert names == sorted(names)
    assert "unit.registry.sorted-a" in names


def test_resolve_task_object() -> None:
    assert resolve(decorated_named) == (
        "unit.registry.decorated-named",
        decorated_named,
    )


def test_resolve_known_name() -> None:
    name, found = resolve("unit.registry.decorated-named")

    assert name == "unit.registry.decorated-named"
    assert found is decorated_named


def test_resolve_unknown_name() -> None:
    assert resolve("unit.registry.elsewhere") == ("unit.registry.elsewhere", None)


def test_resolve_undecorated_function() -> None:
    with pytest.raises(TaskerError) as caught:
        resolve(subtract)  # type: ignore[arg-type]

    text = str(caught.value)
    assert "is not a registered task" in text
    assert "decorate it with @task" in text


# Argument checks


def test_check_arguments_accepts_valid() -> None:
    registered = task(name="unit.registry.arguments")(add)

    assert registered.check_arguments((1,), {}) is None
    assert registered.check_arguments((1, 2), {}) is None
    assert registered.check_arguments((1,), {"b": 2}) is None


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        ((), {}, "missing a required argument: 'a'"),
        ((1, 2, 3), {}, "too many positional arguments"),
        ((1,), {"c": 3}, "unexpected keyword argument 'c'"),
        ((1, 2), {"b": 2}, "multiple values for argument 'b'"),
    ],
)
def test_check_arguments_rejects_wrong_count(
    args: tuple[Any, ...], kwargs: dict[str, Any], reason: str
) -> None:
    registered = task(name="unit.registry.arguments")(add)

    with pytest.raises(TypeError) as caught:
        registered.check_arguments(args, kwargs)

    text = str(caught.value)
    assert "invalid arguments for task 'unit.registry.arguments'" in text
    assert "(ctx: 'Any', resource: 'Any', a: 'int', b: 'int' = 0)" in text
    assert reason in text


def test_check_arguments_keyword_only() -> None:
    registered: Task[bool] = task(name="unit.registry.keyword-only")(keyword_only)

    with pytest.raises(TypeError, match="missing a required argument: 'flag'"):
        registered.check_arguments((), {})


def test_check_arguments_cache_keeps_rejecting() -> None:
    # Valid shapes are cached; a shape that failed must fail again, and a
    # cached one must not hide a different invalid shape.
    registered = task(name="unit.registry.arguments")(add)
    registered.check_arguments((1, 2), {})
    registered.check_arguments((1, 2), {})

    with pytest.raises(TypeError, match="too many positional arguments"):
        registered.check_arguments((1, 2, 3), {})
    with pytest.raises(TypeError, match="too many positional arguments"):
        registered.check_arguments((1, 2, 3), {})
    with pytest.raises(TypeError, match="multiple values for argument 'b'"):
        registered.check_arguments((1, 2), {"b": 2})
