"""Round trips and rejections of task messages and results in serialization.py."""

from __future__ import annotations

import collections
import enum
import math
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tasker_redis.errors import SerializationError
from tasker_redis.serialization import (
    DEAD_LETTERED,
    FAILED,
    MESSAGE_VERSION,
    DeadLetter,
    MessageTemplate,
    TaskMessage,
    TaskResult,
    pack_value,
    unpack_value,
)

MAX_SIZE = 1 << 20

# Every code point, including the lone surrogates that UTF-8 cannot encode
# and that hypothesis leaves out by default. Surrogates, NUL and emoji get
# alphabets of their own so that they turn up often.
ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=()),
        st.characters(categories=["Cs"]),
        st.sampled_from(["\x00", "😀", "🎉"]),
    )
)

# Plain integers plus integers well past the 64 bits that msgpack packs natively.
ANY_INT = st.one_of(
    st.integers(),
    st.integers(min_value=2**63, max_value=2**600),
    st.integers(min_value=-(2**600), max_value=-(2**63) - 1),
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    ANY_INT,
    st.floats(),
    ANY_TEXT,
    st.binary(),
)

MAP_KEYS = st.one_of(ANY_TEXT, ANY_INT, st.binary())

VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(MAP_KEYS, children, max_size=5),
    ),
    max_leaves=25,
)

ARGS = st.lists(VALUES, max_size=5).map(tuple)
KWARGS = st.dictionaries(ANY_TEXT, VALUES, max_size=5)


def assert_same_value(actual: Any, expected: Any, path: str = "value") -> None:
    """Assert that actual equals expected with the same types at every level.

    NaN equals NaN here, and -0.0 differs from 0.0, so a float compares by
    its bits rather than by ==.
    """
    assert type(actual) is type(expected), f"{path}: {actual!r} != {expected!r}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} is not NaN"
        else:
            assert actual == expected, f"{path}: {actual!r} != {expected!r}"
            assert math.copysign(1, actual) == math.copysign(1, expected), path
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same_value(got, want, f"{path}[{index}]")
    elif isinstance(expected, dict):
        assert len(actual) == len(expected), f"{path}: {actual!r} != {expected!r}"
        pairs = zip(actual.items(), expected.items(), strict=True)
        for index, ((got_key, got), (want_key, want)) in enumerate(pairs):
            assert_same_value(got_key, want_key, f"{path} key {index}")
            assert_same_value(got, want, f"{path}[{want_key!r}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def round_trip_argument(value: Any) -> Any:
    message = TaskMessage("id-1", "unit.serialization", args=(value,))
    return TaskMessage.decode(message.encode(MAX_SIZE)).args[0]


def encode_body(**overrides: Any) -> bytes:
    """Encode a valid message map with some fields replaced or, if None, removed."""
    body: dict[str, Any] = {
        "v": MESSAGE_VERSION,
        "id": "id-1",
        "task": "unit.serialization",
        "args": [1],
        "kwargs": {"a": 2},
        "priority": False,
        "once": False,
        "reply_to": None,
        "enqueued_at": 1.5,
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return pack_value(body)


# Round trips


@given(
    args=ARGS,
    kwargs=KWARGS,
    priority=st.booleans(),
    once=st.booleans(),
    reply_to=st.none() | ANY_TEXT,
    enqueued_at=st.floats(min_value=0, max_value=4e9),
)
@example(
    args=("😀", "\x00", "\ud800", "\udfff", b"\x00\xff"),
    kwargs={"\ud83d": 2**64, "emoji 🎉": -(2**100)},
    priority=True,
    once=True,
    reply_to="tasker:{q}:inbox:m",
    enqueued_at=0.0,
)
def test_message_round_trip_keeps_fields(
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    priority: bool,
    once: bool,
    reply_to: str | None,
    enqueued_at: float,
) -> None:
    message = TaskMessage(
        task_id="id-1",
        name="unit.serialization",
        args=args,
        kwargs=kwargs,
        priority=priority,
        once=once,
        reply_to=reply_to,
        enqueued_at=enqueued_at,
    )

    decoded = TaskMessage.decode(message.encode(MAX_SIZE))

    assert_same_value(decoded.args, args, "args")
    assert_same_value(decoded.kwargs, kwargs, "kwargs")
    assert decoded.task_id == "id-1"
    assert decoded.name == "unit.serialization"
    assert decoded.priority is priority
    assert decoded.once is once
    assert decoded.reply_to == reply_to
    assert decoded.enqueued_at == enqueued_at


@given(
    args=ARGS,
    name=ANY_TEXT,
    priority=st.booleans(),
    once=st.booleans(),
    reply_to=st.none() | ANY_TEXT,
    enqueued_at=st.floats(min_value=0, max_value=4e9),
)
def test_template_matches_message_encode(
    *,
    args: tuple[Any, ...],
    name: str,
    priority: bool,
    once: bool,
    reply_to: str | None,
    enqueued_at: float,
) -> None:
    fields: dict[str, Any] = {
        "name": name,
        "priority": priority,
        "once": once,
        "reply_to": reply_to,
        "enqueued_at": enqueued_at,
    }
    template = MessageTemplate(TaskMessage(task_id="", **fields), MAX_SIZE)

    data = template.encode("id-1", args)

    assert data == TaskMessage("id-1", args=args, **fields).encode(MAX_SIZE)
    assert TaskMessage.decode(data).task_id == "id-1"


def test_template_encodes_each_task() -> None:
    template = MessageTemplate(TaskMessage("", "unit.template", once=True), MAX_SIZE)

    first = TaskMessage.decode(template.encode("id-1", (1, "a")))
    second = TaskMessage.decode(template.encode("id-2", ()))

    assert (first.task_id, first.args) == ("id-1", (1, "a"))
    assert (second.task_id, second.args) == ("id-2", ())
    assert second.name == "unit.template"
    assert second.once is True


def test_template_rejects_argument_type() -> None:
    template = MessageTemplate(TaskMessage("", "unit.reject"), MAX_SIZE)

    with pytest.raises(SerializationError) as caught:
        template.encode("id-1", (1, {2}))

    text = str(caught.value)
    assert "argument 1 of task 'unit.reject'" in text
    assert "cannot encode set value {2}" in text
    assert caught.value.task_id == "id-1"
    assert isinstance(caught.value.__cause__, TypeError)


def test_template_rejects_keyword_argument() -> None:
    prototype = TaskMessage("", "unit.reject", kwargs={"option": {3}})

    with pytest.raises(SerializationError) as caught:
        MessageTemplate(prototype, MAX_SIZE)

    assert "keyword argument 'option' of task 'unit.reject'" in str(caught.value)


def test_template_rejects_message_over_max_payload() -> None:
    size = len(TaskMessage("id-1", "unit.size", args=("x" * 1000,)).encode(MAX_SIZE))
    template = MessageTemplate(TaskMessage("", "unit.size"), size - 1)

    assert len(template.encode("id-1", ("x" * 999,))) == size - 1
    with pytest.raises(SerializationError) as caught:
        template.encode("id-1", ("x" * 1000,))

    text = str(caught.value)
    assert "task 'unit.size'" in text
    assert f"is {size} bytes encoded" in text
    assert f"max_payload_size ({size - 1})" in text


@given(value=VALUES, worker_id=ANY_TEXT)
def test_result_round_trip_keeps_value(value: Any, worker_id: str) -> None:
    result = TaskResult("id-1", ok=True, value=value, worker_id=worker_id)

    decoded = TaskResult.decode(result.encode(MAX_SIZE))

    assert_same_value(decoded.value, value)
    assert decoded.task_id == "id-1"
    assert decoded.ok is True
    assert decoded.worker_id == worker_id
    assert decoded.error_kind == ""
    assert decoded.finished_at == result.finished_at


@given(message=ANY_TEXT, traceback=ANY_TEXT)
def test_result_round_trip_keeps_error(message: str, traceback: str) -> None:
    result = TaskResult(
        "id-1",
        ok=False,
        error_kind=FAILED,
        error_type="builtins.ValueError",
        error_message=message,
        traceback=traceback,
        worker_id="w1",
    )

    decoded = TaskResult.decode(result.encode(MAX_SIZE))

    assert decoded.ok is False
    assert decoded.error_kind == FAILED
    assert decoded.error_type == "builtins.ValueError"
    assert decoded.error_message == message
    assert decoded.traceback == traceback
    assert decoded.value is None


@pytest.mark.parametrize(
    "value",
    [
        "😀 emoji",
        "\x00",
        "nul \x00 inside",
        "\ud800",
        "lone \udfff low surrogate",
        "\U0010ffff",
        "",
    ],
)
def test_argument_round_trip_unicode(value: str) -> None:
    assert_same_value(round_trip_argument(value), value)


def test_argument_round_trip_bytes_and_str() -> None:
    decoded = round_trip_argument([b"abc", "abc", b"", ""])

    assert_same_value(decoded, [b"abc", "abc", b"", ""])


@pytest.mark.parametrize(
    "value",
    [
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        10**100,
        -(10**100),
        2**4000,
        -(2**4000),
    ],
)
def test_argument_round_trip_huge_int(value: int) -> None:
    assert_same_value(round_trip_argument(value), value)


def test_argument_round_trip_int_over_4300_digits() -> None:
    # Python refuses str() of an int with more than 4300 decimal digits
    # (sys.get_int_max_str_digits), which the big-int extension relies on.
    value = 10**5000 + 7

    assert_same_value(round_trip_argument(value), value)


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308],
)
def test_argument_round_trip_special_float(value: float) -> None:
    assert_same_value(round_trip_argument(value), value)


@pytest.mark.parametrize(
    "value", [0, "", None, False, b"", [], (), {}, 0.0, True, [None, False, 0]]
)
def test_argument_round_trip_falsy_value(value: Any) -> None:
    assert_same_value(round_trip_argument(value), value)


def test_argument_round_trip_dict_int_keys() -> None:
    value = {1: "one", -(2**70): "huge", 0: None, "1": "text one", b"1": "bytes one"}

    assert_same_value(round_trip_argument(value), value)


def test_argument_round_trip_nested_tuples() -> None:
    value = ((1, (2, (3,))), [(), ((),)], {"key": (b"x", ("y",))})

    assert_same_value(round_trip_argument(value), value)


def test_dead_letter_round_trip() -> None:
    entry = DeadLetter("id-1", "malformed message", b"\xc1raw", "w1", 12.5)

    decoded = DeadLetter.decode(entry.encode())

    assert decoded == entry


# Values that cannot be encoded


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyDict(dict):  # type: ignore[type-arg]
    pass


class Color(enum.IntEnum):
    RED = 1


Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset({1}), "frozenset"),
        (object(), "object"),
        (MyStr("text"), "MyStr"),
        (MyInt(5), "MyInt"),
        (MyDict(a=1), "MyDict"),
        (Color.RED, "Color"),
        (Point(1, 2), "Point"),
        (collections.OrderedDict(a=1), "OrderedDict"),
    ],
)
def test_encode_rejects_argument_type(value: Any, type_name: str) -> None:
    message = TaskMessage("id-1", "unit.reject", args=(1, value))

    with pytest.raises(SerializationError) as caught:
        message.encode(MAX_SIZE)

    text = str(caught.value)
    assert "argument 1 of task 'unit.reject'" in text
    assert f"cannot encode {type_name} value" in text
    assert caught.value.task_id == "id-1"
    assert isinstance(caught.value.__cause__, TypeError)


def test_encode_rejects_keyword_argument() -> None:
    message = TaskMessage("id-1", "unit.reject", args=(1,), kwargs={"option": {3}})

    with pytest.raises(SerializationError) as caught:
        message.encode(MAX_SIZE)

    assert "keyword argument 'option' of task 'unit.reject'" in str(caught.value)


def test_encode_rejects_nested_set() -> None:
    message = TaskMessage("id-1", "unit.reject", args=([1, {"deep": (2, {3})}],))

    with pytest.raises(SerializationError) as caught:
        message.encode(MAX_SIZE)

    assert "argument 0 of task 'unit.reject'" in str(caught.value)


def test_encode_rejects_result_value() -> None:
    result = TaskResult("id-1", ok=True, value={"items": {1, 2}})

    with pytest.raises(SerializationError) as caught:
        result.encode(MAX_SIZE)

    assert "result of task id-1" in str(caught.value)
    assert caught.value.task_id == "id-1"


def test_encode_accepts_exact_max_payload() -> None:
    message = TaskMessage("id-1", "unit.size", args=("x" * 1000,))
    size = len(message.encode(MAX_SIZE))

    assert len(message.encode(size)) == size


def test_encode_rejects_message_over_max_payload() -> None:
    message = TaskMessage("id-1", "unit.size", args=("x" * 1000,))
    size = len(message.encode(MAX_SIZE))

    with pytest.raises(SerializationError) as caught:
        message.encode(size - 1)

    text = str(caught.value)
    assert "task 'unit.size'" in text
    assert f"is {size} bytes encoded" in text
    assert f"max_payload_size ({size - 1})" in text


def test_encode_rejects_result_over_max_payload() -> None:
    result = TaskResult("id-1", ok=True, value=b"\x00" * 5000)

    with pytest.raises(SerializationError) as caught:
        result.encode(4096)

    assert "the result of task id-1" in str(caught.value)
    assert "max_payload_size (4096)" in str(caught.value)


# Decoding invalid messages


@given(data=st.binary())
@example(data=b"\xc1")
@example(data=b"")
def test_decode_random_bytes_raises_value_error(data: bytes) -> None:
    try:
        decoded = TaskMessage.decode(data)
    except ValueError:
        return
    assert isinstance(decoded, TaskMessage)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1", "not a valid msgpack message"),
        (b"", "not a valid msgpack message"),
        (b"\x93\x01", "not a valid msgpack message"),
        (msgpack.packb({"v": 1}) + b"\x00", "not a valid msgpack message"),
        (msgpack.packb([1, 2, 3]), "message is a list, not a map"),
        (msgpack.packb("text"), "message is a str, not a map"),
    ],
)
def test_decode_rejects_non_message(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        TaskMessage.decode(data)


@pytest.mark.parametrize("version", [2, 0, "1", 1.5, [1]])
def test_decode_rejects_wrong_version(version: Any) -> None:
    with pytest.raises(ValueError, match="unsupported message version"):
        TaskMessage.decode(encode_body(v=version))


def test_decode_rejects_missing_version() -> None:
    with pytest.raises(ValueError, match="unsupported message version None"):
        TaskMessage.decode(encode_body(v=None))


def test_decode_rejects_bool_version() -> None:
    # True == 1 in Python, so a plain != comparison lets it through.
    with pytest.raises(ValueError, match="unsupported message version True"):
        TaskMessage.decode(encode_body(v=True))


@pytest.mark.parametrize(
    ("field", "type_name"),
    [
        ("id", "str"),
        ("task", "str"),
        ("args", "list"),
        ("kwargs", "dict"),
        ("priority", "bool"),
        ("once", "bool"),
    ],
)
def test_decode_rejects_missing_field(field: str, type_name: str) -> None:
    with pytest.raises(ValueError, match=f"field '{field}' is missing or not a"):
        TaskMessage.decode(encode_body(**{field: None}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", b"id-1"),
        ("id", 7),
        ("task", ["name"]),
        ("args", {"a": 1}),
        ("args", "text"),
        ("kwargs", [1]),
        ("priority", 1),
        ("once", "yes"),
    ],
)
def test_decode_rejects_wrong_field_type(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"field '{field}' is missing or not a"):
        TaskMessage.decode(encode_body(**{field: value}))


def test_decode_rejects_non_string_kwargs_key() -> None:
    with pytest.raises(ValueError, match="'kwargs' has a key that is not a string"):
        TaskMessage.decode(encode_body(kwargs={1: "x"}))


def test_decode_rejects_non_string_reply_to() -> None:
    with pytest.raises(ValueError, match="field 'reply_to' is not a string: 5"):
        TaskMessage.decode(encode_body(reply_to=5))


def test_decode_replaces_overflowing_enqueued_at() -> None:
    # float() of this int raises OverflowError; decode must not pass it on.
    decoded = TaskMessage.decode(encode_body(enqueued_at=2**1024))

    assert decoded.enqueued_at == 0


def test_decode_ignores_non_number_enqueued_at() -> None:
    decoded = TaskMessage.decode(encode_body(enqueued_at="yesterday"))

    assert decoded.enqueued_at == 0


def encode_with_extension(code: int) -> bytes:
    """Encode a valid message whose only argument has extension type code."""
    # msgpack.ExtType accepts only codes 0 to 127, so a negative code is
    # patched into the fixext 1 header (0xd4, code, one data byte).
    placeholder = msgpack.ExtType(100, b"\x00")
    data = encode_body(args=[placeholder])
    header = bytes([0xD4, 100, 0])
    assert data.count(header) == 1
    return data.replace(header, bytes([0xD4, code & 0xFF, 0]))


@pytest.mark.parametrize("code", [0, 3, 42, 127, -2, -128])
def test_decode_rejects_unknown_extension(code: int) -> None:
    data = encode_with_extension(code)

    with pytest.raises(ValueError, match=f"unknown msgpack extension type {code}"):
        TaskMessage.decode(data)


def test_decode_rejects_timestamp_extension() -> None:
    # msgpack turns the reserved timestamp code -1 into a msgpack.Timestamp
    # itself, without calling the ext_hook that rejects every other code.
    data = encode_body(args=[msgpack.Timestamp(1, 0)])

    with pytest.raises(ValueError, match="extension type -1"):
        TaskMessage.decode(data)


def test_unpack_rejects_unknown_extension() -> None:
    data = msgpack.packb(msgpack.ExtType(9, b"\x00"))

    with pytest.raises(ValueError, match="unknown msgpack extension type 9"):
        unpack_value(data)


@pytest.mark.parametrize(
    "data",
    [msgpack.packb([1]), msgpack.packb({"id": 5}), msgpack.packb({"ok": True})],
)
def test_result_decode_rejects_non_result(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a task result"):
        TaskResult.decode(data)


def test_result_decode_dead_lettered_kind() -> None:
    result = TaskResult(
        "id-1", ok=False, error_kind=DEAD_LETTERED, error_message="moved"
    )

    decoded = TaskResult.decode(result.encode(MAX_SIZE))

    assert decoded.error_kind == DEAD_LETTERED
    assert decoded.error_message == "moved"


@pytest.mark.parametrize("timeout", [None, 0.25, 30.0])
def test_message_round_trip_timeout(timeout: float | None) -> None:
    message = TaskMessage("id-1", "unit.serialization", timeout=timeout)

    decoded = TaskMessage.decode(message.encode(MAX_SIZE))

    assert decoded.timeout == timeout


@pytest.mark.parametrize("timeout", [0, -1.5, "5", True, math.nan, [1]])
def test_decode_rejects_invalid_timeout(timeout: Any) -> None:
    with pytest.raises(ValueError, match="field 'timeout' is not a positive number"):
        TaskMessage.decode(encode_body(timeout=timeout))
