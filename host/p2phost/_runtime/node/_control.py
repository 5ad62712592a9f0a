"""The control socket: how ``p2phost peers`` asks the project's running node.

A Unix socket at ``.p2phost/control.sock``, owner-only; when the project lies so deep that
this path does not fit a Unix socket address, one named by a hash of the project's path in
the user's private runtime directory (``Project.control_socket``). A client sends one JSON line
``{"command": "peers"}`` and reads one JSON line back; the server then closes. A socket
file left behind by a killed node is noticed (nothing answers) and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from ..._project import CONTROL_PATH_MAX, runtime_dir
from .._errors import NodeAlreadyRunning, NodeConfigError, NodeNotRunning
from ..delivery._delivery import CONTROL_COMMANDS
from ._node import Node

_TIMEOUT = 5.0


def _describe(node: Node) -> dict[str, Any]:
    return {
        "peer_id": node.peer_id,
        "addresses": node.addresses,
        "topics": node.topics,
        "peers": [
            {"peer_id": p.peer_id, "address": p.address, "topics": sorted(p.topics),
             "codec": p.codec, "security": p.security}
            for p in node.peers()
        ],
        "discovery": node.discovery_status(),
    }


class ControlServer:
    """Answers the CLI's questions about a running node."""

    def __init__(self, node: Node, path: Path) -> None:
        self.node = node
        self.path = path
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen; refuses when another node of the project already answers."""
        if len(os.fsencode(self.path)) > CONTROL_PATH_MAX:
            raise NodeConfigError(
                f"the control socket path {self.path} is longer than {CONTROL_PATH_MAX} "
                "bytes", fix="give a shorter path (Project.control_socket makes one)")
        if self.path.parent == runtime_dir():
            _private_dir(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            try:
                await asyncio.to_thread(query_control, self.path, "peers", 1.0)
            except NodeNotRunning:
                self.path.unlink(missing_ok=True)
            else:
                raise NodeAlreadyRunning(
                    f"a node of this project is already running (it answers on {self.path})",
                    fix="stop it first, or ask it with `p2phost peers`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o177)  # the socket is created owner-only, no window in between
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        finally:
            os.umask(old)

    async def close(self) -> None:
        """Stop answering and remove the socket file."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TIMEOUT):
                    await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_TIMEOUT):
                line = await reader.readline()
                try:
                    request = json.loads(line)
                    command = request.get("command")
                except (ValueError, AttributeError):
                    request, command = {}, None
                if command == "peers":
                    answer: dict[str, Any] = _describe(self.node)
                elif command == "stats":  # every mode's counters, mailboxes, connections
                    answer = self.node.stats()
                elif command in CONTROL_COMMANDS:  # acknowledged delivery's (_delivery.py)
                    answer = await CONTROL_COMMANDS[command](self.node.delivery, request)
                else:
                    known = ", ".join(["peers", *CONTROL_COMMANDS])
                    answer = {"error": f"unknown command {command!r} (known: {known})"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(_TIMEOUT):
                    await writer.wait_closed()


def _private_dir(path: Path) -> None:
    """Make ``path`` (a shared place like /tmp) ours alone, or refuse: another user could
    otherwise put a socket there that answers for our node."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & 0o077):
        raise NodeConfigError(
            f"{path} (where the control socket of a deep project goes) is not a directory "
            "that only this user can use",
            fix="remove it (another user may have made it), or set XDG_RUNTIME_DIR")


def query_control(path: Path, command: str, timeout: float = _TIMEOUT, *,
                  start: str = "`p2phost run`", **fields: Any) -> dict[str, Any]:
    """Ask the node answering at ``path`` (``fields`` go with the command);
    NodeNotRunning when nothing answers, whose fix starts it with ``start``
    (``Project.start``)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NodeNotRunning(f"no node of this project is running (nothing answers on "
                                 f"{path})", fix=f"start it with {start}") from exc
        try:
            sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, OSError) as exc:
            raise NodeNotRunning(f"the node on {path} did not answer: {exc}",
                                 fix=f"restart it with {start}") from exc
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise NodeNotRunning(f"the node on {path} gave a garbled answer",
                             fix=f"restart it with {start}") from exc
    if not isinstance(answer, dict):
        raise NodeNotRunning(f"the node on {path} gave a garbled answer",
                             fix=f"restart it with {start}")
    return answer
