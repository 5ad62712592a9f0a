"""Projects wired to the real test registry, and the CLI run against them."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningRegistry, run_cli

MANIFEST = """\
# my node: comments and layout must survive every command
[node]
name = "{name}"   # the node's name
listen = ["tcp://127.0.0.1:0"]

[plugins]   # what we run
{plugins}
"""


@dataclass
class Workspace:
    """A project directory, its registry and download cache, and a CLI runner."""

    root: Path
    registry: str
    cache: Path

    def cli(self, *args: str, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``p2phost ARGS`` in the project, against the test registry and cache."""
        return run_cli(*args, cwd=self.root, timeout=timeout,
                       env={"P2PHOST_CACHE_DIR": str(self.cache),
                            "P2PHOST_REGISTRY": self.registry, **(env or {})})

    def ok(self, *args: str) -> str:
        """Run and insist on success; the combined output."""
        done = self.cli(*args)
        assert done.returncode == 0, f"p2phost {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def fails(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run and insist on one clear error: non-zero, ``error:`` line, no traceback."""
        done = self.cli(*args, env=env)
        assert done.returncode != 0, f"p2phost {' '.join(args)} succeeded:\n{done.stdout}"
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("error: "), done.stderr
        return done.stderr

    @property
    def manifest(self) -> str:
        """The text of p2phost.toml."""
        return (self.root / "p2phost.toml").read_text()

    @property
    def lock(self) -> str:
        """The text of p2phost.lock ("" when absent)."""
        path = self.root / "p2phost.lock"
        return path.read_text() if path.exists() else ""

    def installed(self) -> dict[str, str]:
        """Distribution name -> version in the active plugin environment."""
        from p2phost._environment import PluginEnvironment

        return {n: d.version for n, d in
                PluginEnvironment(self.root / ".p2phost").installed().items()}


@pytest.fixture
def workspace(tmp_path: Path, registry: RunningRegistry) -> Callable[..., Workspace]:
    """``workspace(name="a", plugins={...})``: a new project using the test registry."""
    cache = tmp_path / "cache"

    def make(name: str = "proj", plugins: dict[str, str] | None = None,
             cache_dir: Path | None = None) -> Workspace:
        root = tmp_path / name
        root.mkdir()
        lines = "\n".join(f'{n} = "{s}"' for n, s in (plugins or {}).items())
        (root / "p2phost.toml").write_text(MANIFEST.format(name=name, plugins=lines))
        return Workspace(root, registry.url, cache_dir or cache)
    return make


class QuietServer(http.server.ThreadingHTTPServer):
    """A stub registry's server. A client that hangs up before the whole answer is sent
    (an install stopped or interrupted, as tests make them) is counted in ``hung_up``, not
    printed as a BrokenPipe traceback into the test's output; any other error of a handler
    is still printed."""

    hung_up = 0

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exception(), ConnectionError):
            self.hung_up += 1
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def hand_made_registry(pages: Mapping[str, bytes | Callable[[], Iterator[bytes]]],
                       missing: int = 404,
                       content_types: Mapping[str, str] | None = None) -> Iterator[str]:
    """A registry serving ``pages`` by path (what the real one would refuse to hold); a
    callable page is streamed, without a length, until it ends or the client leaves.
    Any other path is answered ``missing`` (503: down behind its proxy). A path in
    ``content_types`` is served with that Content-Type (a package index's pages: pip
    insists). Yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else missing)
            if callable(body):
                self.end_headers()
                with contextlib.suppress(ConnectionError):
                    for chunk in body():
                        self.wfile.write(chunk)
                return
            if content_types and self.path in content_types:
                self.send_header("Content-Type", content_types[self.path])
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture(scope="session")
def builtin_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built-in source (the official plugins, signed), as ``scripts/dist`` ships it:
    point ``P2PHOST_BUILTIN_DIR`` at it."""
    import os
    import sys

    from p2phost._keys import create_key
    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("dist")
    key = root.parent / f"{root.name}-release.key"
    create_key(key)
    subprocess.run([sys.executable, str(REPO / "scripts" / "_dist.py"), "--out", str(root)],
                   check=True, capture_output=True, text=True, timeout=600,
                   env={**os.environ, "P2PHOST_RELEASE_KEY": str(key)})
    return root / "plugins"
