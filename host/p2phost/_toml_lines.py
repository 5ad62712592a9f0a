"""Find the line of a table or key in TOML text, so errors can say ``file:line``."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("([^"]*)"|'([^']*)'|[A-Za-z0-9_.-]+)\s*=""")


def _unquote_key(raw: str) -> str:
    return raw.strip().strip("\"'")


def _table_name(header: str) -> str:
    return ".".join(_unquote_key(part) for part in header.split("."))


def find_line(text: str, table: str, key: str | None = None) -> int | None:
    """1-based line of ``key`` in ``[table]`` (or of the header when ``key`` is None)."""
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
            if match and _unquote_key(match.group(1)) == key:
                return number
    return None
