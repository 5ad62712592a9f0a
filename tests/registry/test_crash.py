"""The server killed with SIGKILL mid-upload: after a restart nothing partial is visible."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ._dists import make_wheel
from .conftest import start_registry


def _start_upload(url: str, token: str, wheel: Path) -> socket.socket:
    """Send the headers and half the body of an upload, then stop sending."""
    parts = urlsplit(url)
    boundary = "crashboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = head + wheel.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(
        f"POST /api/v1/upload HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
    )
    sock.sendall(body[: len(body) // 2])
    return sock


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_upload(backend: str, tmp_path: Path, pg_schema_factory: object) -> None:
    database = pg_schema_factory() if backend == "postgresql" else None  # type: ignore[operator]
    data = tmp_path / "data"
    server = start_registry(data, database)
    token = server.token("kate")
    wheel = make_wheel(tmp_path, "crashy", "1.0.0", extra={"crashy/blob": os.urandom(3_000_000)})
    try:
        sock = _start_upload(server.url, token, wheel)
        time.sleep(0.5)  # the server is now reading the body
        server.stop(signal.SIGKILL)
        sock.close()
        # What a crash between the rename and the commit would leave, and a dead upload's temp.
        (data / "files" / "crashy").mkdir(parents=True, exist_ok=True)
        (data / "files" / "crashy" / "crashy-0.9.0-py3-none-any.whl").write_bytes(b"partial")
        (data / "tmp" / "999999-deadbeef.part").write_bytes(b"partial")
    finally:
        server.stop(signal.SIGKILL)

    restarted = start_registry(data, database)
    try:
        with restarted.client() as client:
            assert client.get("/api/v1/plugins/crashy").status_code == 404
            assert "crashy" not in client.get("/simple/").text
            orphan = "/files/crashy/crashy-0.9.0-py3-none-any.whl"
            assert client.get(orphan).status_code == 404
        assert list((data / "tmp").iterdir()) == []
        assert list((data / "files").rglob("*.whl")) == []
        if database is None:
            with sqlite3.connect(data / "registry.sqlite3") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        with restarted.client() as client:
            retry = client.post("/api/v1/upload", files={"file": (wheel.name, wheel.read_bytes())},
                                headers={"Authorization": f"Bearer {token}"})
            assert retry.status_code == 201, retry.text
            assert client.get("/api/v1/plugins/crashy").json()["versions"][0]["version"] == "1.0.0"
    finally:
        restarted.stop()


def test_ready_line_and_port_in_use(tmp_path: Path) -> None:
    server = start_registry(tmp_path / "a")
    try:
        port = urlsplit(server.url).port
        assert port and port > 0
        clash = subprocess.run(
            [*server.proc.args[:-4], "--port", str(port), "--data", str(tmp_path / "b")],
            capture_output=True, text=True, timeout=30,
        )
        assert clash.returncode == 2, clash.stderr  # a usage error, as a node's port in use
        assert f"cannot listen on 127.0.0.1:{port}" in clash.stderr
        assert "\nfix: pick another --port" in clash.stderr, clash.stderr
        assert "Traceback" not in clash.stderr
    finally:
        server.stop()
