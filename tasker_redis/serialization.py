"""msgpack encoding of task messages, results and dead-letter entries."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from tasker_redis.errors import SerializationError

MESSAGE_VERSION = 1

# Extension types this library defines. Unpacking rejects every other code,
# so a message can never make a worker build an arbitrary object.
EXT_TUPLE = 1
EXT_BIG_INT = 2

# Lone surrogates are valid in Python str but not in UTF-8. "surrogatepass"
# lets them round-trip instead of failing the whole message.
UNICODE_ERRORS = "surrogatepass"


def _encode_extension(value: object) -> msgpack.ExtType:
    # strict_types makes the packer send tuples and ints beyond 64 bits here,
    # and every subclass of a native type, which is rejected below so that
    # nothing changes type on the way through.
    if type(value) is tuple:
        return msgpack.ExtType(EXT_TUPLE, pack_value(list(value)))
    if type(value) is int:
        # Two's complement, big-endian, in the fewest bytes that hold the sign.
        size = value.bit_length() // 8 + 1
        return msgpack.ExtType(EXT_BIG_INT, value.to_bytes(size, "big", signed=True))
    raise TypeError(
        f"cannot encode {type(value).__qualname__} value {_preview(value)}: "
        "use None, bool, int, float, str, bytes, or lists, tuples and dicts of them"
    )


def _decode_extension(code: int, data: bytes) -> object:
    if code == EXT_TUPLE:
        return tuple(unpack_value(data))
    if code == EXT_BIG_INT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown msgpack extension type {code}")


def _reject_timestamps(value: object) -> None:
    # msgpack decodes its own timestamp extension (-1) without calling
    # ext_hook, so it is rejected here to keep to the two types above.
    if isinstance(value, msgpack.Timestamp):
        raise ValueError("unknown msgpack extension type -1 (timestamp)")
    if isinstance(value, (list, tuple)):
        for item in value:
            _reject_timestamps(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_timestamps(key)
            _reject_timestamps(item)


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(
        default=_encode_extension,
        strict_types=True,
        use_bin_type=True,
        unicode_errors=UNICODE_ERRORS,
    )


def pack_value(value: object) -> bytes:
    """Encode a value, raising TypeError or ValueError if it cannot be encoded."""
    packed: bytes = _new_packer().pack(value)
    return packed


def unpack_value(data: bytes) -> Any:
    """Decode bytes made by pack_value, keeping str and bytes apart.

    Raises:
        ValueError: The data is not msgpack or uses an extension type this
            library does not define.
    """
    value = msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=False,
        ext_hook=_decode_extension,
        unicode_errors=UNICODE_ERRORS,
    )
    # A timestamp is encoded with type byte 0xff, so data without it has none.
    if b"\xff" in data:
        _reject_timestamps(value)
    return value


def _is_finite(number: float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _preview(value: object, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _check_size(what: str, data: bytes, max_size: int) -> None:
    if len(data) > max_size:
        raise SerializationError(
            f"{what} is {len(data)} bytes encoded, more than max_payload_size "
            f"({max_size}): pass a reference such as a file path or key instead, "
            "or raise Config.max_payload_size"
        )


def _locate_failure(
    task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    for index, value in enumerate(args):
        try:
            pack_value(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return f"argument {index} of task {task_name!r}: {exc}"
    for name, value in kwargs.items():
        try:
            pack_value(value)
        except (TypeError, ValueError, OverflowError) as exc:
            return f"keyword argument {name!r} of task {task_name!r}: {exc}"
    return f"the arguments of task {task_name!r}"


@dataclass(frozen=True)
class TaskMessage:
    """One queued task as stored in Redis.

    Attributes:
        task_id: Unique id, also the suffix of the result key.
        name: Registered task name.
        args: Positional arguments after the context and the resource.
        kwargs: Keyword arguments.
        priority: True for the high-priority queue.
        once: True for at-most-once delivery: never retried or re-delivered.
        reply_to: Inbox key of the producer waiting for the result, or None.
        enqueued_at: Producer clock at enqueue, seconds since the epoch.
        timeout: Seconds the run may take, overriding the task's own timeout,
            or None.
    """

    task_id: str
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: bool = False
    once: bool = False
    reply_to: str | None = None
    enqueued_at: float = 0.0
    timeout: float | None = None

    def body(self) -> dict[str, Any]:
        """Return the msgpack map that encode() packs, keys in wire order."""
        return {
            "v": MESSAGE_VERSION,
            "id": self.task_id,
            "task": self.name,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "priority": self.priority,
            "once": self.once,
            "reply_to": self.reply_to,
            "enqueued_at": self.enqueued_at,
            "timeout": self.timeout,
        }

    def encode(self, max_size: int) -> bytes:
        """Encode the message, raising SerializationError naming a bad argument."""
        try:
            data = pack_value(self.body())
        except (TypeError, ValueError, OverflowError) as exc:
            where = _locate_failure(self.name, self.args, self.kwargs)
            raise SerializationError(
                f"cannot encode {where}", task_id=self.task_id
            ) from exc
        _check_size(f"task {self.name!r} with these arguments", data, max_size)
        return data

    @classmethod
    def decode(cls, data: bytes) -> TaskMessage:
        """Decode a message, raising ValueError with the reason it is invalid."""
        try:
            body = unpack_value(data)
        except Exception as exc:
            raise ValueError(f"not a valid msgpack message: {exc}") from exc
        if not isinstance(body, dict):
            raise ValueError(f"message is a {type(body).__name__}, not a map")
        if type(body.get("v")) is not int or body.get("v") != MESSAGE_VERSION:
            raise ValueError(f"unsupported message version {body.get('v')!r}")
        checks = (
            ("id", str),
            ("task", str),
            ("args", list),
            ("kwargs", dict),
            ("priority", bool),
            ("once", bool),
        )
        for key, expected in checks:
            if not isinstance(body.get(key), expected):
                raise ValueError(
                    f"field {key!r} is missing or not a {expected.__name__}: "
                    f"{_preview(body.get(key))}"
                )
        if not all(isinstance(key, str) for key in body["kwargs"]):
            raise ValueError("field 'kwargs' has a key that is not a string")
        reply_to = body.get("reply_to")
        if reply_to is not None and not isinstance(reply_to, str):
            raise ValueError(f"field 'reply_to' is not a string: {_preview(reply_to)}")
        # enqueued_at only feeds the queue-wait log line, so a bad value is
        # replaced rather than failing the task.
        enqueued_at = body.get("enqueued_at", 0.0)
        if not isinstance(enqueued_at, (int, float)) or not _is_finite(enqueued_at):
            enqueued_at = 0.0
        timeout = body.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not timeout > 0
            or not _is_finite(timeout)
        ):
            raise ValueError(f"field 'timeout' is not a positive number: {timeout!r}")
        return cls(
            task_id=body["id"],
            name=body["task"],
            args=tuple(body["args"]),
            kwargs=body["kwargs"],
            priority=body["priority"],
            once=body["once"],
            reply_to=reply_to,
            enqueued_at=float(enqueued_at),
            timeout=None if timeout is None else float(timeout),
        )


class MessageTemplate:
    """An encoder for many messages that differ from one prototype in id and args.

    The other fields are packed once. encode() packs only the id and the
    arguments and joins them with those parts, so it returns the same bytes
    as TaskMessage.encode for the same fields. A template is not thread-safe.
    """

    def __init__(self, prototype: TaskMessage, max_size: int) -> None:
        """Pack the fields of prototype other than task_id and args.

        Raises:
            SerializationError: A keyword argument cannot be encoded.
        """
        self._name = prototype.name
        self._max_size = max_size
        self._packer = _new_packer()
        body = prototype.body()
        # body() puts "id" before "args", so the fixed parts are the map up to
        # the "id" key, the fields between the two, and the rest.
        parts: list[bytes] = []
        current = [self._packer.pack_map_header(len(body))]
        try:
            for key, value in body.items():
                current.append(self._packer.pack(key))
                if key in ("id", "args"):
                    parts.append(b"".join(current))
                    current = []
                else:
                    current.append(self._packer.pack(value))
        except (TypeError, ValueError, OverflowError) as exc:
            where = _locate_failure(prototype.name, (), prototype.kwargs)
            raise SerializationError(f"cannot encode {where}") from exc
        parts.append(b"".join(current))
        self._head, self._middle, self._tail = parts

    def encode(self, task_id: str, args: tuple[Any, ...]) -> bytes:
        """Encode the prototype with task_id and args.

        Raises:
            SerializationError: An argument cannot be encoded, and the error
                names it, or the encoded message is larger than max_size.
        """
        try:
            packed_id = self._packer.pack(task_id)
            packed_args = self._packer.pack(list(args))
        except (TypeError, ValueError, OverflowError) as exc:
            where = _locate_failure(self._name, args, {})
            raise SerializationError(f"cannot encode {where}", task_id=task_id) from exc
        data = b"".join((self._head, packed_id, self._middle, packed_args, self._tail))
        if len(data) > self._max_size:
            _check_size(
                f"task {self._name!r} with these arguments", data, self._max_size
            )
        return data


# Kinds of failure a worker reports, each mapped to an exception class by
# the producer (see results.py).
FAILED = "failed"
NOT_REGISTERED = "not_registered"
MAX_RETRIES = "max_retries"
LOST = "lost"
DEAD_LETTERED = "dead_lettered"
SERIALIZATION = "serialization"
TIMEOUT = "timeout"


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task as a worker reports it.

    Attributes:
        task_id: Id of the task.
        ok: True if the task returned a value.
        value: The returned value when ok.
        error_kind: One of the failure kinds above when not ok.
        error_type: Qualified name of the exception type on the worker.
        error_message: Message of the exception.
        traceback: Formatted traceback text, or "".
        worker_id: Id of the worker that reported the result.
        finished_at: Worker clock when the task ended, seconds since the epoch.
        task_name: Name of the task, if the worker could read it.
    """

    task_id: str
    ok: bool
    value: Any = None
    error_kind: str = ""
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    worker_id: str = ""
    finished_at: float = field(default_factory=time.time)
    task_name: str = ""

    def encode(self, max_size: int) -> bytes:
        """Encode the result, raising SerializationError if the value cannot be."""
        body = {
            "id": self.task_id,
            "ok": self.ok,
            "value": self.value,
            "error": [self.error_kind, self.error_type, self.error_message]
            if not self.ok
            else None,
            "traceback": self.traceback,
            "worker": self.worker_id,
            "finished_at": self.finished_at,
            "task": self.task_name,
        }
        try:
            data = pack_value(body)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"cannot encode the result of task {self.task_id}: {exc}",
                task_id=self.task_id,
            ) from exc
        _check_size(f"the result of task {self.task_id}", data, max_size)
        return data

    @classmethod
    def decode(cls, data: bytes) -> TaskResult:
        """Decode a result, raising ValueError if it is not one."""
        body = unpack_value(data)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ValueError(f"not a task result: {_preview(body)}")
        error = body.get("error") or ["", "", ""]
        return cls(
            task_id=body["id"],
            ok=bool(body.get("ok")),
            value=body.get("value"),
            error_kind=str(error[0]),
            error_type=str(error[1]),
            error_message=str(error[2]),
            traceback=str(body.get("traceback") or ""),
            worker_id=str(body.get("worker") or ""),
            finished_at=float(body.get("finished_at") or 0.0),
            task_name=str(body.get("task") or ""),
        )


@dataclass(frozen=True)
class DeadLetter:
    """An entry of the dead-letter list: a message that no worker could run.

    Attributes:
        task_id: Id of the task, or the id Redis stored it under.
        reason: Why it was dead-lettered, in one sentence.
        message: The raw message bytes as found in Redis.
        worker_id: Id of the worker that moved it.
        failed_at: Worker clock when it was moved, seconds since the epoch.
    """

    task_id: str
    reason: str
    message: bytes
    worker_id: str = ""
    failed_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        """Encode the entry."""
        return pack_value(
            {
                "id": self.task_id,
                "reason": self.reason,
                "message": self.message,
                "worker": self.worker_id,
                "failed_at": self.failed_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> DeadLetter:
        """Decode an entry made by encode."""
        body = unpack_value(data)
        return cls(
            task_id=str(body["id"]),
            reason=str(body["reason"]),
            message=bytes(body["message"]),
            worker_id=str(body.get("worker", "")),
            failed_at=float(body.get("failed_at", 0.0)),
        )
