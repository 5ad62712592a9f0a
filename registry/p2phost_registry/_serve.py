"""Run the registry under uvicorn and say where it listens once it does."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

from ._app import create_app
from ._cache import PAGE_TTL
from ._errors import ListenFailed, StoreError
from ._state import WATCH_INTERVAL
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


#: Settings a worker process reads to open its own store (``--workers`` above 1).
_WORKER_ENV = "P2PHOST_REGISTRY_WORKER"


def worker_app() -> ASGIApp:
    """The app of one worker process: its own store connection and caches."""
    settings = json.loads(os.environ[_WORKER_ENV])
    store = Store(Path(settings["data"]), settings["database"], settings["max_upload"])
    return create_app(store, public_url=settings["public_url"], page_ttl=settings["page_ttl"],
                      watch_interval=settings["watch_interval"])


def serve(
    host: str = "127.0.0.1",
    port: int = 8470,
    data: Path = Path("registry-data"),
    database: str | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    log_level: str = "warning",
    public_url: str | None = None,
    forwarded_allow_ips: str | None = None,
    page_ttl: float = PAGE_TTL,
    workers: int = 1,
    watch_interval: float = WATCH_INTERVAL,
) -> None:
    """Serve the registry until SIGINT or SIGTERM; ``port`` 0 picks a free port.

    ``public_url`` is the address pages show (``pip install --index-url URL/simple/``);
    without it, the address listened on. ``forwarded_allow_ips`` are proxies whose
    X-Forwarded-For is trusted as the client address (download counting). With
    ``workers`` above 1, that many processes share the socket, each with its own
    connection and caches, kept fresh as separate servers are (LISTEN/NOTIFY on
    PostgreSQL; within ``watch_interval`` seconds on SQLite).
    """
    if workers < 1:
        raise StoreError(f"--workers {workers}: give 1 or more")
    if watch_interval <= 0:
        raise StoreError(f"--watch-interval {watch_interval}: give a number of seconds above 0")
    store = Store(data, database, max_upload, recover=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        store.close()
        sock.close()
        raise ListenFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    if public_url is None:
        named = socket.gethostname() if host in ("0.0.0.0", "::") else shown
        public_url = f"http://{named}:{real_port}"
    elif not public_url.startswith(("http://", "https://")):
        store.close()
        sock.close()
        raise StoreError(f"--public-url {public_url!r}: give the address users reach, "
                         "such as https://plugins.example.org")
    options: dict[str, Any] = dict(
        log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=30,
        server_header=False, timeout_graceful_shutdown=10,
        forwarded_allow_ips=forwarded_allow_ips or "127.0.0.1",
        proxy_headers=forwarded_allow_ips is not None,
    )
    line = READY_LINE.format(host=shown, port=real_port)
    try:
        if workers == 1:
            config = uvicorn.Config(
                create_app(store, public_url=public_url, page_ttl=page_ttl,
                           watch_interval=watch_interval), **options)
            _Server(config, line).run(sockets=[sock])
            return
        store.close()  # each worker opens its own
        os.environ[_WORKER_ENV] = json.dumps({
            "data": str(data), "database": database, "max_upload": max_upload,
            "public_url": public_url, "page_ttl": page_ttl, "watch_interval": watch_interval})
        config = uvicorn.Config("p2phost_registry._serve:worker_app", factory=True,
                                workers=workers, **options)
        # The socket listens already: connections wait in its backlog for the workers.
        print(line, flush=True)
        Multiprocess(config, sockets=[sock]).run()
    finally:
        store.close()
        sock.close()
        sys.stdout.flush()
