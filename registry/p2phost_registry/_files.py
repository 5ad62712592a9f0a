"""Immutable file responses kept in memory: wheels, sdists, their signatures and metadata.

Published files never change (a new version is a new file), so a file read once can be
served from memory for as long as the process lives, bounded by :data:`MAX_BYTES`; no
change in the store ever invalidates it. Larger files are streamed from disk each time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

#: Files up to this size are kept in memory.
MAX_FILE = 4 * 1024 * 1024
#: The cache holds at most this many bytes (least recently used files go first).
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ServedFile:
    """A file response: body, headers, and what a download of it counts for."""

    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    etag: bytes
    plugin: str
    version: str
    filename: str
    #: Whether a GET of it is a download (the distribution itself, not a sidecar).
    counted: bool
    #: The ASGI messages of a 200 answer, built once (the fast path sends them as they are).
    start: dict[str, Any] = field(init=False, repr=False)
    whole: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", {"type": "http.response.start", "status": 200,
                                           "headers": self.headers})
        object.__setattr__(self, "whole", {"type": "http.response.body", "body": self.body})


class FileCache:
    """Served files by URL path, least recently used dropped past :data:`MAX_BYTES`."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._files: OrderedDict[str, ServedFile] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def get(self, path: str) -> ServedFile | None:
        """The cached file at ``path``, if any."""
        served = self._files.get(path)
        if served is not None:
            self._files.move_to_end(path)
        return served

    def put(self, path: str, served: ServedFile) -> None:
        """Keep ``served`` (if small enough)."""
        if len(served.body) > MAX_FILE or path in self._files:
            return
        self._files[path] = served
        self._bytes += len(served.body)
        while self._bytes > self._max and self._files:
            _, old = self._files.popitem(last=False)
            self._bytes -= len(old.body)


def file_headers(
    content_type: str, length: int, etag: bytes
) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of an immutable file response."""
    return (
        (b"content-type", content_type.encode()),
        (b"content-length", str(length).encode()),
        (b"etag", etag),
        (b"cache-control", b"max-age=31536000, immutable"),
        (b"accept-ranges", b"bytes"),
    )
