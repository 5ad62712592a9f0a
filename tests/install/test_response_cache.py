"""Registry answers kept with their caching headers: used while fresh, revalidated when stale.

Between the CLI and a real registry sits a counting proxy: it records every request
(path, If-None-Match, status) and can shorten the registry's ``max-age`` so staleness
comes in seconds. A frozen proxy keeps the first answer to each path and answers
conditional requests itself: the registry's own pages change as download counts do, and
a test of 304s needs a page that does not.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningRegistry, run_cli, start_registry, stop_registry
from tests.registry.conftest import wait_until

from ._projects import Spec, write_projects
from .conftest import QuietServer, Workspace

Make = Callable[..., Workspace]


class Proxy(QuietServer):
    """Forwards GETs to ``upstream``; ``seen`` lists (path, If-None-Match, status)."""

    def __init__(self, upstream: str, frozen: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.seen: list[tuple[str, str | None, int]] = []
        #: When set, the ``Cache-Control`` of every answer becomes ``max-age=N``.
        self.max_age: int | None = None
        #: Frozen: path -> (status, headers, body) of the first answer, served from then on.
        self.frozen: dict[str, tuple[int, dict[str, str], bytes]] | None = {} if frozen else None
        #: Header lines sent first in every 304 (a field given twice, say).
        self.head_304: list[tuple[str, str]] = []
        #: When set, each request is seen (``asked``) and then answered only once it is clear.
        self.hold: threading.Event | None = None
        self.asked = threading.Event()

    @property
    def url(self) -> str:
        """Where clients reach the proxy."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def api(self) -> list[tuple[str, str | None, int]]:
        """The plugin-page requests seen (files and signatures left out)."""
        return [s for s in self.seen if s[0].startswith("/api/")]


class _Forward(http.server.BaseHTTPRequestHandler):
    server: Proxy

    def do_GET(self) -> None:
        frozen, inm = self.server.frozen, self.headers.get("If-None-Match")
        if frozen is None:
            status, got, body = self._ask({k: v for k, v in self.headers.items() if k.lower()
                                           in ("accept", "if-none-match", "user-agent")})
        else:
            if self.path not in frozen:
                status, got, body = self._ask({"Accept": self.headers.get("Accept", "*/*")})
                got = {k: v for k, v in got.items() if k.lower() != "etag"}
                got["ETag"] = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                frozen[self.path] = status, got, body
            status, got, body = frozen[self.path]
            if inm is not None and inm == got["ETag"]:
                status, body = 304, b""
        self.server.seen.append((self.path, inm, status))
        if self.server.hold is not None:
            self.server.asked.set()
            self.server.hold.wait(30)
        self.send_response(status)
        if status == 304:
            for key, value in self.server.head_304:
                self.send_header(key, value)
        for key, value in got.items():
            if key.lower() in ("content-type", "etag", "vary", "cache-control"):
                if key.lower() == "cache-control" and self.server.max_age is not None:
                    value = f"max-age={self.server.max_age}"
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _ask(self, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.server.upstream + self.path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, dict(answer.headers.items()), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy_to() -> Iterator[Callable[..., Proxy]]:
    """``proxy_to(url, frozen=False)``: a counting proxy in front of the registry at ``url``."""
    started: list[Proxy] = []

    def start(upstream: str, frozen: bool = False) -> Proxy:
        proxy = Proxy(upstream, frozen)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        started.append(proxy)
        return proxy
    yield start
    for proxy in started:
        proxy.shutdown()
        proxy.server_close()


def through(ws: Workspace, proxy: Proxy) -> Workspace:
    """``ws`` asking the registry through ``proxy``."""
    return Workspace(ws.root, proxy.url, ws.cache)


def test_the_proxy_is_quiet_about_a_client_that_hangs_up(
        proxy_to: Callable[..., Proxy], capfd: pytest.CaptureFixture[str]) -> None:
    proxy = proxy_to("http://127.0.0.1:9", frozen=True)  # port 9: nothing answers there
    assert proxy.frozen is not None
    proxy.frozen["/gone"] = (200, {"ETag": '"x"'}, b"x" * 65536)
    proxy.hold = threading.Event()
    client = socket.create_connection(("127.0.0.1", proxy.server_address[1]), timeout=10)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sendall(b"GET /gone HTTP/1.1\r\nHost: proxy\r\n\r\n")
    assert proxy.asked.wait(10)
    client.close()  # with a reset, as a killed installer's socket is closed
    proxy.hold.set()
    wait_until("the proxy to see the client gone", lambda: proxy.hung_up == 1)
    assert capfd.readouterr().err == ""
    # A real failure of the proxy (its upstream is down) is still printed.
    with pytest.raises(ConnectionError):  # the proxy's handler failed and hung up
        urllib.request.urlopen(proxy.url + "/api/v1/plugins/x", timeout=10)
    assert "URLError: <urlopen error [Errno 111] Connection refused>" in capfd.readouterr().err


def test_a_fresh_answer_is_used_without_asking(workspace: Make, registry: RunningRegistry,
                                               proxy_to: Callable[..., Proxy]) -> None:
    proxy = proxy_to(registry.url)
    first = through(workspace("first"), proxy)
    first.ok("plugin", "install", "beta", "--yes")
    assert sorted(p for p, _, _ in proxy.api()) == ["/api/v1/plugins/alpha",
                                                    "/api/v1/plugins/beta"]
    proxy.seen.clear()
    second = through(workspace("second"), proxy)  # same download cache, new project
    out = second.ok("plugin", "install", "beta", "--yes")
    assert "+ beta 1.0.0" in out and "+ alpha 1.1.0" in out
    assert proxy.seen == []  # the pages were fresh and the wheels in the download cache
    assert second.installed() == {"alpha": "1.1.0", "beta": "1.0.0"}
    # Another registry URL never sees those answers: it is asked.
    other = proxy_to(registry.url)
    third = through(workspace("third"), other)
    third.ok("plugin", "install", "beta", "--yes")
    assert sorted(p for p, inm, _ in other.api() if inm is None) == [
        "/api/v1/plugins/alpha", "/api/v1/plugins/beta"]
    # A damaged cache file is not an answer: the registry is asked again.
    for kept in (first.cache / "http").rglob("*.json"):
        head = kept.read_bytes().partition(b"\n")[0]
        kept.write_bytes(head + b"\n{not json")
    proxy.seen.clear()
    fourth = through(workspace("fourth"), proxy)
    fourth.ok("plugin", "install", "beta", "--yes")
    assert sorted(p for p, inm, _ in proxy.api() if inm is None) == [
        "/api/v1/plugins/alpha", "/api/v1/plugins/beta"]


def test_a_stale_answer_is_revalidated_and_fresh_again(
        workspace: Make, registry: RunningRegistry,
        proxy_to: Callable[..., Proxy]) -> None:
    proxy = proxy_to(registry.url, frozen=True)
    proxy.max_age = 4
    through(workspace("first"), proxy).ok("plugin", "install", "alpha", "--yes")
    (_, inm, status), = proxy.api()
    assert inm is None and status == 200
    time.sleep(4.5)
    proxy.seen.clear()
    second = through(workspace("second"), proxy)
    started = time.monotonic()
    second.ok("plugin", "install", "alpha", "--yes")
    (path, inm, status), = proxy.api()
    assert path == "/api/v1/plugins/alpha" and inm and status == 304
    if time.monotonic() - started < 3:  # the 304 made it fresh for 4 s more (a loaded
        proxy.seen.clear()              # machine may take longer to get here)
        through(workspace("third"), proxy).ok("plugin", "install", "alpha", "--yes")
        assert proxy.api() == []


def test_refresh_revalidates_a_fresh_answer(workspace: Make, registry: RunningRegistry,
                                            proxy_to: Callable[..., Proxy]) -> None:
    proxy = proxy_to(registry.url, frozen=True)
    through(workspace("first"), proxy).ok("plugin", "install", "alpha", "--yes")
    # Another option sends the command through typer instead of the scripted fast path.
    for name, extra in (("scripted", ()), ("typer", ("--registry", proxy.url))):
        proxy.seen.clear()
        through(workspace(name), proxy).ok("plugin", "install", "alpha", "--yes", "--refresh",
                                           *extra)
        assert [(p, bool(inm), s) for p, inm, s in proxy.api()] == [
            ("/api/v1/plugins/alpha", True, 304)], name


def _serves(registry: RunningRegistry, name: str, version: str, yanked: bool = False) -> None:
    """Wait until the registry itself lists ``name version`` (yanked or not)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{registry.url}/api/v1/plugins/{name}", timeout=10) as r:
            rows = json.load(r)["versions"]
        if any(v["version"] == version and v["yanked"] == yanked for v in rows):
            return
        time.sleep(0.2)
    raise AssertionError(f"the registry never served {name} {version} (yanked={yanked})")


def _publish(registry: RunningRegistry, root: Path, version: str) -> None:
    """Publish ``fresh VERSION`` into the running registry and wait until it serves it."""
    run_cli("registry", "seed", "--data", str(registry.data),
            *map(str, write_projects(root / version, (Spec("fresh", version),))),
            check=True, timeout=120)
    _serves(registry, "fresh", version)


def _installs(ws: Workspace, *args: str) -> dict[str, str]:
    """``plugin install ARGS --yes`` in ``ws``; what is installed then."""
    ws.ok("plugin", "install", *args, "--yes")
    return ws.installed()


def test_new_and_yanked_releases_show_after_max_age(
        workspace: Make, tmp_path: Path, proxy_to: Callable[..., Proxy]) -> None:
    own = start_registry(tmp_path / "data", write_projects(tmp_path / "projects", (
        Spec("fresh", "1.0.0"), Spec("fresh", "1.1.0"))))
    try:
        proxy = proxy_to(own.url)
        proxy.max_age = 3600

        def project(name: str) -> Workspace:
            return through(workspace(name, plugins={"fresh": "*"}), proxy)

        assert _installs(project("first")) == {"fresh": "1.1.0"}
        # A release published while the kept answer is fresh: not seen (HTTP semantics) ...
        _publish(own, tmp_path, "1.2.0")
        proxy.seen.clear()
        second = project("second")
        second.ok("plugin", "install", "--yes")
        assert second.installed() == {"fresh": "1.1.0"} and proxy.api() == []
        # ... unless the request needs it: a resolution failing on kept answers asks again.
        proxy.max_age = 2
        second.ok("plugin", "install", "fresh>=1.2", "--yes")
        assert second.installed() == {"fresh": "1.2.0"}
        assert [(bool(inm), s) for _, inm, s in proxy.api()] == [(True, 200)]
        # A yank, once the answer is stale, is seen: a new project locks 1.1.0.
        own.yank("fresh", "1.2.0", "broken")
        _serves(own, "fresh", "1.2.0", yanked=True)
        time.sleep(2.5)
        assert _installs(project("third")) == {"fresh": "1.1.0"}
        # And so is a new release.
        _publish(own, tmp_path, "1.3.0")
        time.sleep(2.5)
        assert _installs(project("fourth")) == {"fresh": "1.3.0"}
    finally:
        stop_registry(own)


def test_cache_control_decides_what_is_kept_and_for_how_long(tmp_path: Path) -> None:
    from p2phost._install._responses import ResponseCache, freshness

    assert freshness("no-store, max-age=60") is None
    assert freshness("max-age=60, no-cache") == 0 and freshness("max-age=x") == 0
    assert freshness("public, max-age=10") == 10 and freshness(None) == 0
    cache = ResponseCache(tmp_path / "http")
    cache.put("k", b"{}", {"Cache-Control": "no-store", "ETag": '"a"'})
    assert cache.get("k") is None
    cache.put("k", b"{}", {"ETag": '"a"'})  # no max-age: kept only to revalidate
    kept = cache.get("k")
    assert kept is not None and not kept.fresh(time.time()) and kept.etag == '"a"'
    cache.put("k", b"{}", {"Cache-Control": "max-age=10", "Age": "9"}, now=100.0)
    kept = cache.get("k")
    assert kept is not None and kept.fresh(100.5) and not kept.fresh(101.0)
    assert not kept.fresh(99.0)  # a clock set back: not trusted


def test_a_file_replaced_since_the_kept_answer_is_asked_about_again(
        workspace: Make, tmp_path: Path, proxy_to: Callable[..., Proxy]) -> None:
    # Two registries with a different file for fresh 1.0.0: the one behind the proxy is
    # replaced (a store seeded again, a registry moved) while the kept answer is fresh.
    first, second = (start_registry(tmp_path / f"data-{name}", write_projects(
        tmp_path / f"projects-{name}", (Spec("fresh", "1.0.0", summary=name),)))
        for name in ("one", "two"))
    try:
        proxy = proxy_to(first.url)
        proxy.max_age = 3600
        one = through(workspace("one", plugins={"fresh": "*"}), proxy)
        assert _installs(one) == {"fresh": "1.0.0"}
        proxy.upstream = second.url
        for kept in ("files", "unpacked"):  # the file itself must be downloaded again
            shutil.rmtree(one.cache / kept)
        proxy.seen.clear()
        two = through(workspace("two", plugins={"fresh": "*"}), proxy)
        assert _installs(two) == {"fresh": "1.0.0"}  # not "tampered or truncated download"
        assert [(bool(inm), s) for _, inm, s in proxy.api()] == [(True, 200)]
        assert two.lock != one.lock  # the lock has the file the registry serves now
    finally:
        stop_registry(first)
        stop_registry(second)
