"""Find the line of a table or key in TOML text, so errors can say ``file:line``."""

from __future__ import annotations

import re
from collections.abc import Callable

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("([^"]*)"|'([^']*)'|[A-Za-z0-9_.-]+)\s*=""")


def _unquote_key(raw: str) -> str:
    return raw.strip().strip("\"'")


def _table_name(header: str) -> str:
    return ".".join(_unquote_key(part) for part in header.split("."))


def find_line(text: str, table: str, key: str | None = None,
              same: Callable[[str, str], bool] = str.__eq__) -> int | None:
    """1-based line of ``key`` in ``[table]`` (or of the header when ``key`` is None).

    ``same(found, key)`` decides whether a key in the file is the one asked for.
    """
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = _table_name(header.group(1))
            if key is None and current == table:
                return number
            continue
        if key is not None and current == table:
            match = _KEY.match(line)
            if match and same(_unquote_key(match.group(1)), key):
                return number
    return None


_AT_LINE = re.compile(r"at line (\d+)")


def decode_error_line(exc: Exception) -> int | None:
    """The line a ``tomllib.TOMLDecodeError`` points at (its message says it on 3.11)."""
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    match = _AT_LINE.search(str(exc))
    return int(match.group(1)) if match else None
