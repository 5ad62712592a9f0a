"""The registries' JSON answers kept on disk with their caching headers (RFC 9111, private).

A registry says how long an answer stays fresh (``Cache-Control: max-age=N``; a p2phost
registry says 10 s) and names its version (``ETag``). While an answer is fresh the
installer uses it without asking; once stale it asks again with ``If-None-Match``, and a
304 makes the kept answer fresh again with no body sent. ``--refresh`` (and every
``plugin upgrade`` or ``outdated``) treats every kept answer as stale. An answer with
``no-store`` is never kept; one with ``no-cache`` or no ``max-age`` is kept only to be
revalidated. Answers are keyed by their URL, so another registry URL never sees them.

One file per URL: a line of JSON with the headers that matter (``_fileops.head_line``,
which the replay writes too), then the body as sent.
A file that cannot be read or parsed is a miss; one that cannot be written is not kept
(the cache only saves requests, it never decides an answer).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fileops import head_line, read_head, replace_file
from .._revalidate import cache_control, freshness, is_fresh, seconds


@dataclass(frozen=True)
class Kept:
    """One kept answer: its body, its ETag, when it was received and how long it is fresh."""

    body: bytes
    etag: str | None
    #: ``time.time()`` when the answer (or the 304 that confirmed it) was received.
    received: float
    #: Seconds fresh from its creation (``max-age``); 0: revalidate before each use.
    max_age: float
    #: The ``Age`` the sender gave it (seconds it had already spent in caches).
    age: float = 0.0

    def fresh(self, now: float) -> bool:
        """Whether the answer may be used without asking (RFC 9111 4.2)."""
        return is_fresh(self.received, self.max_age, self.age, now)


class ResponseCache:
    """Kept answers under ``root`` (``CACHE/http``), with counts of what was used how."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Answers used without asking, and answers a 304 confirmed, this run.
        self.fresh_hits = 0
        self.revalidated = 0
        #: The body of every answer used this run, by key: what a replay of this run's
        #: install depends on (``_record``).
        self.served: dict[str, bytes] = {}
        #: Whether this run used an answer that was not kept (a 404, ``no-store``, an
        #: error) or two answers to one question: then no replay may stand for it.
        self.doubt = False

    def serve(self, key: str, body: bytes) -> None:
        """Note that this run used ``body`` as the answer for ``key``."""
        if self.served.setdefault(key, body) != body:
            self.doubt = True

    def path(self, key: str) -> Path:
        """The file that keeps the answer for ``key``."""
        return self._path(key)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, key: str) -> Kept | None:
        """The kept answer for ``key`` (URL and Accept), or None."""
        try:
            with open(self._path(key), "rb") as handle:
                kept, etag, received, max_age, age = read_head(handle.readline())
                body = handle.read()
            return Kept(body, etag, received, max_age, age) if kept == key else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def put(self, key: str, body: bytes, headers: Any, now: float | None = None) -> None:
        """Keep a 200 answer with its ``headers`` (a mapping with ``get``), if they allow."""
        max_age = freshness(cache_control(headers))
        etag = headers.get("ETag")
        if max_age is None or (max_age == 0 and not etag):
            self.doubt = True  # asked every time: a replay would not ask
            self.forget(key)
            return
        self._write(key, Kept(body, etag, time.time() if now is None else now, max_age,
                              seconds(headers.get("Age"))))

    def confirm(self, key: str, kept: Kept, headers: Any) -> Kept:
        """A 304 confirmed ``kept``: fresh again from now, with any headers the 304 updates."""
        control = cache_control(headers)
        max_age = kept.max_age if control is None else freshness(control)
        if max_age is None:
            self.doubt = True
            self.forget(key)
            return kept
        renewed = Kept(kept.body, headers.get("ETag") or kept.etag, time.time(), max_age,
                       seconds(headers.get("Age")))
        self._write(key, renewed)
        self.revalidated += 1
        return renewed

    def forget(self, key: str) -> None:
        """Drop the kept answer for ``key``, if any."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError:
            pass

    def _write(self, key: str, kept: Kept) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A reader sees the old answer or the new, never half.
            replace_file(str(path), head_line(key, kept.etag, kept.received, kept.max_age,
                                              kept.age) + kept.body)
        except OSError:
            pass
