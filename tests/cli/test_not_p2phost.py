"""Dialling a port where no p2phost node listens (the outsider report, D4): the error says
the other side is not a p2phost node and how it answered, and the fix is the address."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import RunningRegistry, run_cli

from .conftest import cli_env, new_project


@contextmanager
def answering(reply: bytes) -> Iterator[int]:
    """A loopback server that sends ``reply`` to every connection at once: its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(reply)
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize(("reply", "like"), [
    (b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n", "an HTTP server"),
    (b"-ERR unknown command\r\n", "a Redis server")])
def test_a_port_that_is_not_a_p2phost_node_says_so(
        tmp_path: Path, official_registry: RunningRegistry, reply: bytes, like: str) -> None:
    root = new_project(tmp_path / "alice", official_registry)
    env = cli_env(official_registry, tmp_path / "cache")
    with answering(reply) as port:
        done = run_cli("ping", f"tcp://127.0.0.1:{port}", "-c", "1", cwd=root, env=env,
                       timeout=60)
    assert done.returncode == 1, done.stderr
    assert (f"the other side at tcp://127.0.0.1:{port} is not a p2phost node (it answered "
            f"like {like})") in done.stderr, done.stderr
    assert "fix: check the address and port" in done.stderr
    assert "security plugin" not in done.stderr
