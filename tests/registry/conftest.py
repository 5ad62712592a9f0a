"""Registry fixtures: the real server in a subprocess, on SQLite or the real PostgreSQL."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from p2phost_registry import Store

from ._dists import write_project

PG_BASE = "postgresql://127.0.0.1:5432/test"
CI = os.environ.get("CI") == "true"
START_TIMEOUT = 20.0


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service or tool is missing; under CI=true that is a failure."""
    if CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Registry:
    """A running `p2phost registry serve` process."""

    url: str
    data: Path
    database: str | None
    proc: subprocess.Popen[str]
    tokens: dict[str, str] = field(default_factory=dict)

    def store(self) -> Store:
        """The same store, opened in this process (for tokens and look-ups)."""
        return Store(self.data, self.database)

    def token(self, owner: str, *scopes: str) -> str:
        """A token for ``owner`` (cached per owner and scopes)."""
        key = f"{owner}:{','.join(scopes)}"
        if key not in self.tokens:
            store = self.store()
            try:
                self.tokens[key] = store.create_token(owner, list(scopes))
            finally:
                store.close()
        return self.tokens[key]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_registry(
    data: Path, database: str | None = None, *extra: str, port: int = 0
) -> Registry:
    """Start the server as users do and wait for its ready line."""
    # A short page lifetime so that flushed download counts show within a test.
    cmd = [sys.executable, "-m", "p2phost", "registry", "serve", "--port", str(port),
           "--create", "--data", str(data), "--page-ttl", "1", *extra]
    if database:
        cmd += ["--database", database]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + START_TIMEOUT
    assert proc.stdout is not None
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("p2phost registry listening on "):
            return Registry(line.split()[-1], data, database, proc)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"the registry did not start: {line!r} {err}")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``check`` to hold, failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def pg_schema_factory() -> Iterator[object]:
    """Make fresh PostgreSQL schemas (one per store) and drop them at the end."""
    made: list[str] = []

    def make() -> str:
        if not postgres_up():
            skip_or_fail("PostgreSQL is not running on 127.0.0.1:5432")
        import psycopg

        schema = f"reg_{secrets.token_hex(6)}"
        with psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        return f"{PG_BASE}?options=-csearch_path%3D{schema}"

    yield make
    if made:
        import psycopg

        with psycopg.connect(PG_BASE, autocommit=True, connect_timeout=5) as conn:
            for schema in made:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    pg_schema_factory: object,
) -> Iterator[Registry]:
    """A running registry per module and storage back end."""
    database = pg_schema_factory() if request.param == "postgresql" else None  # type: ignore[operator]
    server = start_registry(tmp_path_factory.mktemp("registry"), database)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sqlite_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A running registry on SQLite only (for the client-tool tests)."""
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real plugin projects built once per session with `python -m build` -> {filename: path}."""
    src = tmp_path_factory.mktemp("projects")
    out = tmp_path_factory.mktemp("dists")
    readme = (
        "# Demo transport\n\nMoves *bytes*.\n\n"
        '<img src="x" onerror="document.body.setAttribute(\'data-pwned\', \'1\')">\n\n'
        "[click](javascript:document.body.setAttribute('data-pwned','1'))\n"
    )
    projects = [
        write_project(src, "demo-transport", "1.0.0", readme=readme),
        write_project(src, "demo-transport", "1.1.0", readme=readme),
        write_project(src, "demo-codec", "1.0.0", kind="codec", host_api=">=2,<3",
                      summary="A codec for the next host API"),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist",
             "--outdir", str(out), str(p)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for p in projects
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return {p.name: p for p in out.iterdir()}
