"""The run_task resource pool and the health check in pool.py."""

from __future__ import annotations

import itertools
import logging
from contextlib import ExitStack

import pytest

from tasker_redis.pool import ResourcePool, destroy_quietly, resource_is_healthy


class Resources:
    """on_create and on_destroy hooks that record every call."""

    def __init__(self) -> None:
        self.numbers = itertools.count(1)
        self.created: list[str] = []
        self.destroyed: list[str] = []
        self.fail_next_create = False

    def create(self) -> str:
        if self.fail_next_create:
            self.fail_next_create = False
            raise RuntimeError("on_create failed")
        resource = f"resource-{next(self.numbers)}"
        self.created.append(resource)
        return resource

    def destroy(self, resource: str) -> None:
        self.destroyed.append(resource)


@pytest.fixture
def resources() -> Resources:
    return Resources()


def make_pool(resources: Resources, size: int) -> ResourcePool:
    return ResourcePool(resources.create, resources.destroy, size)


# Lending and reuse


def test_pool_creates_lazily(resources: Resources) -> None:
    pool = make_pool(resources, 2)

    assert resources.created == []
    assert pool.available == 0


def test_pool_reuses_returned_resource(resources: Resources) -> None:
    pool = make_pool(resources, 2)

    with pool.lease() as first:
        first_resource = first.resource
    with pool.lease() as second:
        second_resource = second.resource

    assert first_resource == "resource-1"
    assert second_resource == "resource-1"
    assert resources.created == ["resource-1"]
    assert resources.destroyed == []


def test_pool_keeps_returned_resources_idle(resources: Resources) -> None:
    pool = make_pool(resources, 2)

    with pool.lease(), pool.lease():
        assert pool.available == 0

    assert pool.available == 2
    assert resources.destroyed == []


def test_pool_caps_at_size(resources: Resources) -> None:
    pool = make_pool(resources, 2)

    with ExitStack() as stack:
        leases = [stack.enter_context(pool.lease()) for _ in range(3)]
        pooled = [lease.pooled for lease in leases]

    assert pooled == [True, True, False]
    assert pool.available == 2


def test_pool_destroys_temporary_resource(resources: Resources) -> None:
    pool = make_pool(resources, 1)

    with pool.lease() as pooled, pool.lease() as temporary:
        assert temporary.pooled is False
        assert temporary.resource == "resource-2"
        assert resources.destroyed == []

    assert resources.destroyed == ["resource-2"]
    assert pooled.resource == "resource-1"
    assert pool.available == 1


def test_pool_size_zero_lends_temporary(resources: Resources) -> None:
    pool = make_pool(resources, 0)

    with pool.lease() as lease:
        assert lease.pooled is False

    assert resources.destroyed == ["resource-1"]
    assert pool.available == 0


def test_pool_replaces_unhealthy_resource(resources: Resources) -> None:
    pool = make_pool(resources, 1)

    with pool.lease() as lease:
        lease.healthy = False
    with pool.lease() as replacement:
        replacement_resource = replacement.resource
        replacement_pooled = replacement.pooled

    assert resources.destroyed == ["resource-1"]
    assert replacement_resource == "resource-2"
    assert replacement_pooled is True
    assert pool.available == 1


def test_pool_returns_resource_after_error(resources: Resources) -> None:
    pool = make_pool(resources, 1)

    with pytest.raises(KeyError), pool.lease():
        raise KeyError("task failed")

    assert pool.available == 1
    assert resources.destroyed == []


def test_pool_create_failure_keeps_count(resources: Resources) -> None:
    pool = make_pool(resources, 1)
    resources.fail_next_create = True

    with pytest.raises(RuntimeError, match="on_create failed"), pool.lease():
        pass
    with pool.lease() as lease:
        pooled = lease.pooled

    assert pooled is True
    assert pool.available == 1


# Closing


def test_pool_close_destroys_idle(resources: Resources) -> None:
    pool = make_pool(resources, 2)
    with pool.lease(), pool.lease():
        pass

    pool.close()

    assert sorted(resources.destroyed) == ["resource-1", "resource-2"]
    assert pool.available == 0


def test_pool_close_destroys_later_returned(resources: Resources) -> None:
    pool = make_pool(resources, 2)

    with pool.lease() as lease:
        pool.close()
        assert resources.destroyed == []

    assert resources.destroyed == [lease.resource]
    assert pool.available == 0


def test_pool_after_close_lends_temporary(resources: Resources) -> None:
    pool = make_pool(resources, 2)
    pool.close()

    with pool.lease() as lease:
        assert lease.pooled is False

    assert resources.destroyed == ["resource-1"]
    assert pool.available == 0


def test_pool_close_survives_destroy_error(caplog: pytest.LogCaptureFixture) -> None:
    def failing_destroy(resource: object) -> None:
        raise OSError("already closed")

    pool = ResourcePool(object, failing_destroy, 1)
    with pool.lease():
        pass

    with caplog.at_level(logging.ERROR, logger="tasker_redis.pool"):
        pool.close()

    assert "on_destroy raised while destroying a resource" in caplog.text
    assert "already closed" in caplog.text


def test_destroy_quietly_calls_hook(resources: Resources) -> None:
    destroy_quietly(resources.destroy, "resource-9")

    assert resources.destroyed == ["resource-9"]


# Health check


def test_healthy_without_check() -> None:
    assert resource_is_healthy(None, ValueError("x")) is True


@pytest.mark.parametrize(
    ("verdict", "expected"), [(True, True), (False, False), (1, True), ("", False)]
)
def test_healthy_uses_check_verdict(verdict: object, expected: bool) -> None:
    assert resource_is_healthy(lambda error: verdict, ValueError("x")) is expected


def test_healthy_check_receives_error() -> None:
    seen: list[BaseException] = []
    error = ConnectionResetError("peer gone")

    def check(exc: BaseException) -> bool:
        seen.append(exc)
        return False

    resource_is_healthy(check, error)

    assert seen == [error]


def test_healthy_check_raising_is_unhealthy(caplog: pytest.LogCaptureFixture) -> None:
    def check(error: BaseException) -> bool:
        raise RuntimeError("check broke")

    with caplog.at_level(logging.ERROR, logger="tasker_redis.pool"):
        healthy = resource_is_healthy(check, ValueError("x"))

    assert healthy is False
    assert "check_health raised while judging ValueError" in caplog.text
    assert "check broke" in caplog.text
