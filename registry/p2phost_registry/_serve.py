"""Run the registry under uvicorn and say where it listens once it does."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import uvicorn

from ._app import create_app
from ._errors import StoreError
from ._store import DEFAULT_MAX_UPLOAD, Store

READY_LINE = "p2phost registry listening on http://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, line: str) -> None:
        super().__init__(config)
        self._line = line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self._line, flush=True)


def serve(
    host: str = "127.0.0.1",
    port: int = 8470,
    data: Path = Path("registry-data"),
    database: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    log_level: str = "warning",
) -> None:
    """Serve the registry until SIGINT or SIGTERM; ``port`` 0 picks a free port."""
    store = Store(data, database, max_upload, recover=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        store.close()
        sock.close()
        raise StoreError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port "
            "(or 0 for any free port)"
        ) from exc
    sock.listen(2048)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    config = uvicorn.Config(
        create_app(store), log_level=log_level, access_log=False, lifespan="on",
        timeout_keep_alive=30, server_header=False, timeout_graceful_shutdown=10,
    )
    try:
        _Server(config, READY_LINE.format(host=shown, port=real_port)).run(sockets=[sock])
    finally:
        store.close()
        sock.close()
        sys.stdout.flush()
