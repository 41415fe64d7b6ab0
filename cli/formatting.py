"""Text and JSON renderings shared by the operator commands."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any


def format_duration(seconds: float) -> str:
    """Format seconds as "0.8 s", "45 s", "12m05s", "3h02m" or "2d04h"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs} s"


def format_timestamp(epoch_seconds: float) -> str:
    """Format seconds since the epoch in local time, or "unknown" for 0."""
    if epoch_seconds <= 0:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_seconds))


def shorten(text: str, width: int) -> str:
    """Cut text to width characters, ending in "..." if it was longer."""
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align rows under headers in columns two spaces apart."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json_value(value: Any) -> Any:
    """Convert a decoded msgpack value into one that json.dumps accepts.

    Tuples become lists. Bytes become text, with bytes that are not UTF-8
    written as \\xNN escapes. Map keys that JSON cannot have become their
    repr().
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    if isinstance(value, dict):
        return {_json_key(key): to_json_value(item) for key, item in value.items()}
    return value


def _json_key(key: Any) -> str | int | float | bool | None:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    if isinstance(key, bytes):
        return key.decode("utf-8", errors="backslashreplace")
    return repr(key)


def dump_json(value: Any) -> str:
    """Encode a decoded msgpack value as one line of JSON.

    Non-ASCII text is written as is, unless the value contains a lone surrogate,
    which UTF-8 cannot encode: then every non-ASCII character is escaped.
    """
    converted = to_json_value(value)
    text = json.dumps(converted, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(converted)
    return text


def count_of(count: int, singular: str, plural: str) -> str:
    """Return "1 entry" or "3 entries": the count with the word that fits it."""
    return f"{count} {singular if count == 1 else plural}"
