"""The ``/metrics`` HTTP endpoint, served on the node's event loop with bounded cost.

Why not prometheus-client's ``start_http_server``: it starts a thread per connection and
never times out a request that is not finished, so anyone who can reach the port holds a
thread (and its stack) per open socket for as long as they like (1,000 half-sent requests
kept 1,000 threads in the node), and it answers every path with the metrics. Here:

- connections are accepted by asyncio on the node's loop: an idle or half-sent one costs a
  socket and a small task, not a thread;
- a client has ``READ_TIMEOUT`` seconds to send its request head (at most ``MAX_HEAD``
  bytes, ``MAX_HEADERS`` lines; more is 431) and as long to take the response; then the
  connection is closed;
- at most ``MAX_CONNECTIONS`` connections are served at once; when they are all open, a
  newcomer takes the place of the one that has waited longest without sending its whole
  request head (as the node's admission does for handshakes), so sockets that send
  nothing cannot keep a scraper out; when every one has sent its head, the newcomer is
  closed at once, unread (a 503 would need its request read first);
- one request per connection (``Connection: close``, as prometheus-client's server did);
- only ``/metrics`` is served, 404 elsewhere; GET and HEAD only, 405 for other methods (a
  response to HEAD has no body, whatever its status);
- a request that carries a body (a POST, say) has it read and dropped, up to
  ``MAX_DISCARD`` bytes within ``LINGER`` seconds, after its response: closing with it
  unread would reset the connection, and the client would lose the response.

The response itself is prometheus-client's: its WSGI app (``make_wsgi_app``) picks the
text or OpenMetrics format from ``Accept`` and gzips when ``Accept-Encoding`` asks. It
runs in one thread of the endpoint's own (the node collector waits there for the snapshot
it asks the loop for), so scrapes at the same time take turns and never cost more than
that one thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger("p2phost.node")

#: Seconds a client has to send its request head, and again to take the response.
READ_TIMEOUT = 10.0
#: Connections served at once; one more takes the place of one still sending its head,
#: or is closed at once.
MAX_CONNECTIONS = 16
#: Bytes of a request body read (and dropped) after the response, and the seconds given.
MAX_DISCARD = 1024 * 1024
LINGER = 2.0
#: Bytes of a request head (request line and headers), and its header lines.
MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
PATH = "/metrics"

#: (status line, headers, body) of one response.
Response = tuple[str, list[tuple[str, str]], bytes]


class _Refused(Exception):
    """A request answered with an error status before any metrics are made."""

    def __init__(self, status: str, text: str, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(status)
        self.response: Response = (status, [("Content-Type", "text/plain; charset=utf-8"),
                                            *headers], text.encode() + b"\n")


class MetricsEndpoint:
    """Serves a registry's metrics on ``host:port`` from the running loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app = make_wsgi_app(registry)
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="p2phost-metrics")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        #: The connections whose request head is not in yet, oldest first.
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        #: The module's defaults, per endpoint (the tests shorten them).
        self.read_timeout = READ_TIMEOUT
        self.max_connections = MAX_CONNECTIONS

    @property
    def connections(self) -> int:
        """Connections open and being served now."""
        return len(self._writers)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the address bound (port 0 resolved). Raises OSError."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop listening and drop the connections open (a scrape then fails; nothing
        waits for it)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections and not self._make_room():
            log.warning("metrics endpoint: %d connections open already (the most it "
                        "serves at once), one more closed", len(self._writers))
            writer.transport.abort()
            return
        self._writers.add(writer)
        self._waiting[writer] = None
        try:
            await self._answer(reader, writer)
        finally:
            self._waiting.pop(writer, None)
            self._writers.discard(writer)

    async def _answer(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        method, body = "", False
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    method, target, headers = await _read_head(reader)
            except TimeoutError:
                method, response = "GET", _Refused("408 Request Timeout", "the request "
                                                   "took too long").response
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.transport.abort()
                return
            else:
                self._waiting.pop(writer, None)  # no longer the one to close for room
                body = ("transfer-encoding" in headers
                        or headers.get("content-length", "0").strip() not in ("", "0"))
                response = await self._respond(method, target, headers)
        except _Refused as refused:
            response = refused.response
        if await self._send(writer, response, head_only=method == "HEAD", linger=body):
            await self._linger(reader, writer)

    def _make_room(self) -> bool:
        """Closes the connection that has waited longest for its request head, if any."""
        if not self._waiting:
            return False
        oldest = next(iter(self._waiting))
        self._waiting.pop(oldest)
        self._writers.discard(oldest)
        log.debug("metrics endpoint: %d connections open already, the oldest without a "
                  "request closed for a new one", self.max_connections)
        oldest.transport.abort()
        return True

    async def _linger(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Reads and drops what the client still sends (the request's body) until it
        closes, so that closing does not reset the connection before the client read
        the response; a client that sends more than ``MAX_DISCARD`` bytes or takes
        longer than ``LINGER`` seconds is reset."""
        left = MAX_DISCARD
        try:
            async with asyncio.timeout(min(LINGER, self.read_timeout)):
                while left > 0 and (chunk := await reader.read(min(left, 64 * 1024))):
                    left -= len(chunk)
        except (TimeoutError, ConnectionError):
            left = 0
        if left <= 0:
            writer.transport.abort()
        else:
            writer.transport.close()

    async def _respond(self, method: str, target: str, headers: dict[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            raise _Refused("405 Method Not Allowed", "only GET and HEAD",
                           [("Allow", "GET, HEAD")])
        parts = urlsplit(target)
        if parts.path != PATH:
            raise _Refused("404 Not Found", f"not found; the metrics are at {PATH}")
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": parts.path,
                   "QUERY_STRING": parts.query,
                   **{f"HTTP_{name.upper().replace('-', '_')}": value
                      for name, value in headers.items()}}
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _call, self._app, environ)
        except Exception as exc:  # a scrape fails; the node goes on
            log.warning("metrics endpoint: the scrape failed: %s: %s",
                        type(exc).__name__, exc)
            raise _Refused("500 Internal Server Error", "the metrics could not be "
                           "collected; see the node's log") from exc

    async def _send(self, writer: asyncio.StreamWriter, response: Response,
                    head_only: bool, linger: bool) -> bool:
        """Sends ``response`` and closes the connection; with ``linger``, half-closes it
        instead (true when sent: the caller then reads what the client still sends)."""
        status, headers, body = response
        lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers),
                 f"Content-Length: {len(body)}", "Connection: close", "", ""]
        # No buffer in the transport beyond the kernel's: drain() then waits until the
        # client took the response, and a client that does not read is timed out.
        writer.transport.set_write_buffer_limits(high=0)
        try:
            writer.write("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
            async with asyncio.timeout(self.read_timeout):
                await writer.drain()
        except (TimeoutError, ConnectionError):
            writer.transport.abort()
            return False
        if linger and writer.can_write_eof():
            writer.write_eof()
            return True
        writer.close()
        return False


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """The request line's method and target, and the headers (repeated ones joined)."""
    size = 0
    lines: list[str] = []
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise _Refused("431 Request Header Fields Too Large", "request head too "
                           "large") from None
        size += len(line)
        if size > MAX_HEAD or len(lines) > MAX_HEADERS:
            raise _Refused("431 Request Header Fields Too Large", "request head too large")
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            if lines:
                break
            continue  # blank lines before the request line are allowed (RFC 9112 2.2)
        lines.append(text)
    request = lines[0].split()
    if len(request) != 3 or not request[2].startswith("HTTP/1."):
        raise _Refused("400 Bad Request", "not an HTTP/1.x request line")
    headers: dict[str, str] = {}
    for text in lines[1:]:
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise _Refused("400 Bad Request", "malformed header line")
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return request[0], request[1], headers


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Response:
    """Runs prometheus-client's WSGI app (in the endpoint's thread)."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started[:] = [status, headers]

    body = b"".join(app(environ, start_response))
    # Length and connection are the endpoint's to say.
    headers = [(k, v) for k, v in started[1]
               if k.lower() not in ("content-length", "connection")]
    return started[0], headers, body
