"""Small, bounded HTTP GETs with retries.

The standard library's urllib is used rather than httpx on purpose: importing httpx
costs about 150 ms, more than a whole install from a local registry takes, and the
installer only needs plain GETs (also of ``file://`` URLs, which pip reports for local
indexes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .. import __version__
from ._errors import RegistryError, Unreachable

if TYPE_CHECKING:
    import urllib.error

    from ._responses import ResponseCache

#: Seconds to wait for a connection or a read; ``P2PHOST_TIMEOUT`` overrides it.
DEFAULT_TIMEOUT = 10.0
#: How many times a GET is tried before giving up.
ATTEMPTS = 3
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: Most bytes of a JSON answer read (a plugin's page or a search is a few KiB): a registry
#: that sends more is not believed, rather than held in memory whole.
MAX_JSON = 64 * 2**20
#: Most bytes of an error response read for its message.
_MAX_ERROR = 64 * 2**10
#: Longest a network wait of the main thread goes without a look at Ctrl-C (:func:`_wakeups`).
WAKE_EVERY = 0.2


class NotFound(RegistryError):
    """The server answered 404; ``message`` is its own explanation when it gave one."""


class _NotModified(Exception):
    """The server answered 304 to a conditional GET: the kept answer is still current."""

    def __init__(self, headers: Any) -> None:
        super().__init__("304 Not Modified")
        self.headers = headers


@dataclass(frozen=True)
class Fetcher:
    """GETs with a timeout on every wait and a bounded number of retries."""

    timeout: float = DEFAULT_TIMEOUT
    attempts: int = ATTEMPTS
    backoff: float = 0.2
    #: Where JSON answers are kept with their caching headers (None: nothing is kept).
    responses: ResponseCache | None = None
    #: Treat every kept answer as stale: revalidate it before use (``--refresh``).
    refresh: bool = False

    @classmethod
    def from_env(cls, cache_dir: Path | None = None, *, refresh: bool = False) -> Fetcher:
        """A fetcher honouring ``P2PHOST_TIMEOUT`` (seconds) that keeps JSON answers under
        ``cache_dir/http`` (default: the download cache's directory)."""
        from ._cache import default_cache_dir
        from ._responses import ResponseCache

        raw = os.environ.get("P2PHOST_TIMEOUT")
        try:
            timeout = float(raw) if raw else DEFAULT_TIMEOUT
        except ValueError:
            raise RegistryError(f"P2PHOST_TIMEOUT={raw!r} is not a number of seconds",
                                fix="export P2PHOST_TIMEOUT=10") from None
        responses = ResponseCache((cache_dir or default_cache_dir()) / "http")
        return cls(timeout=timeout, responses=responses, refresh=refresh)

    def refreshing(self) -> Fetcher:
        """This fetcher, revalidating every kept answer before use."""
        return replace(self, refresh=True)

    @contextmanager
    def open(self, url: str, *, accept: str = "*/*", etag: str | None = None
             ) -> Iterator[IO[bytes]]:
        """The body of ``url`` as a stream; retried when the server is down or busy.

        With ``etag``, the GET is conditional: a 304 raises :class:`_NotModified`.
        """
        import urllib.error  # with http.client and ssl: only once something is fetched
        import urllib.request

        headers = {"User-Agent": f"p2phost/{__version__}", "Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        request = urllib.request.Request(url, headers=headers)
        # Every wait here, and the caller's reads of the body, may be a long one.
        with _wakeups():
            last, error = "", RegistryError
            for attempt in range(self.attempts):
                if attempt:
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                try:
                    response = urllib.request.urlopen(request, timeout=self.timeout)
                except urllib.error.HTTPError as exc:
                    if exc.code == 304 and etag:
                        raise _NotModified(exc.headers) from None
                    detail = _error_message(exc)
                    if exc.code == 404:
                        raise NotFound(detail or f"{url}: not found") from None
                    last = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
                    if exc.code not in _RETRY_STATUS:
                        break
                    continue
                except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                    reason = getattr(exc, "reason", exc)
                    last = str(reason) or type(reason).__name__
                    continue
                with response:
                    yield response
                return
            else:
                # Every try failed to connect, timed out or was told 429/5xx (a registry
                # down behind its proxy): unreachable. Only another status is an answer.
                error = Unreachable
        raise error(f"{url} did not answer ({last}) after {self.attempts} attempts "
                            f"with a {self.timeout:g} s timeout",
                            fix="check that the registry is running (p2phost registry serve), "
                                "or choose another with --registry URL")

    def json(self, url: str) -> Any:
        """GET ``url`` and parse its JSON body: a kept answer while fresh (module
        :mod:`._responses`), else asked for, conditionally when one is kept."""
        accept = "application/json"
        cache, key = self.responses, f"{accept} {url}"
        kept = cache.get(key) if cache is not None else None
        if cache is not None and kept is not None:
            try:
                parsed = json.loads(kept.body)
            except ValueError:  # a damaged cache file: the registry's answer decides
                cache.forget(key)
                kept = None
            else:
                if not self.refresh and kept.fresh(time.time()):
                    cache.fresh_hits += 1
                    cache.serve(key, kept.body)
                    return parsed
        try:
            try:
                with self.open(url, accept=accept, etag=kept.etag if kept else None) as body:
                    data = body.read(MAX_JSON + 1)
                    headers = body.headers  # type: ignore[attr-defined]
            except _NotModified as exc:
                assert cache is not None and kept is not None
                cache.confirm(key, kept, exc.headers)
                cache.serve(key, kept.body)
                return parsed
            if len(data) > MAX_JSON:
                raise ValueError(f"more than {MAX_JSON // 2**20} MiB")
            parsed = json.loads(data)
            if cache is not None:
                cache.put(key, data, headers)
                cache.serve(key, data)
            return parsed
        except BaseException as exc:
            # A 404 or an unreachable registry decides too (another registry's answer, the
            # built-in source's): no replay may stand for this run (``_record``).
            if cache is not None:
                cache.doubt = True
            if isinstance(exc, ValueError | OSError):
                raise RegistryError(f"{url} answered something that is not JSON ({exc})",
                                    fix="check that --registry points at a p2phost "
                                        "registry") from exc
            raise

    def copy(self, url: str, out: IO[bytes], on_chunk: Callable[[bytes], None]) -> None:
        """Stream ``url`` into ``out``, calling ``on_chunk`` with each chunk first."""
        with self.open(url) as body:
            while chunk := body.read(1 << 16):
                on_chunk(chunk)
                out.write(chunk)


def _ignore(signum: int, frame: object) -> None:
    """The SIGALRM handler of :func:`_wakeups`: the wake-up is all it is for."""


@contextmanager
def _wakeups() -> Iterator[None]:
    """Interrupt the main thread's network waits every :data:`WAKE_EVERY` seconds.

    Ctrl-C interrupts a socket wait, and Python then raises KeyboardInterrupt; but a
    Ctrl-C that lands after the interpreter last looked for signals and before the wait
    began (a few microseconds, more on a loaded machine) interrupts nothing: it would be
    acted on only when the wait ends, after the whole timeout (10 s; more when a
    registry never answers). A SIGALRM that does nothing interrupts each wait that
    often, and Python runs the pending Ctrl-C then. Only in the main thread (the only
    one signals reach), and only while no one else uses SIGALRM or the real-time timer.
    """
    import signal
    import threading

    if (not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None)
            or signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0)):
        yield
        return
    previous = signal.signal(signal.SIGALRM, _ignore)
    signal.setitimer(signal.ITIMER_REAL, WAKE_EVERY, WAKE_EVERY)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # A SIGALRM delivered before the timer stopped is handled at this call's start,
        # while _ignore is still its handler (else Python reports it ignored).
        _ignore(signal.SIGALRM, None)
        signal.signal(signal.SIGALRM, previous)


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The ``{"error": ...}`` message a p2phost registry puts in error responses."""
    try:
        data = json.loads(exc.read(_MAX_ERROR) or b"null")
    except (ValueError, OSError):
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""
