"""Open the p2phost node of a Dask process, from a p2phost project.

The one module of this plugin that imports the host (``p2phost``), not only the SDK:
the Dask backend runs in Dask's processes, where no ``p2phost run`` built a node, so it
opens one as any program does, through the host's public library API
(``p2phost.open_node``: the manifest's plugins and trust policy, as ``p2phost run``
applies them). It imports the host's public names only; keep it the only such place.

The project is ``$P2PHOST_PROJECT`` (or the working directory, or a parent): its
manifest says which transports, security, codecs and discovery the node runs and where
it listens (``tcp://127.0.0.1:0``: every Dask process gets its own port). Every Dask
process is a peer of its own, with a fresh identity (so a scheduler's address changes
with every start, as a port-0 TCP one does), unless ``$P2PHOST_DASK_KEY`` names a key
file, created on first use: a scheduler that keeps its address across restarts. It
runs beside the project's own node, if one runs: it serves no control socket and
writes no state into the project's ``.p2phost/``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from p2phost_sdk import Identity

from ._app import DASK_TOPIC, DaskCommApp
from ._errors import NoProject

if TYPE_CHECKING:
    from p2phost import AsyncNode

log = logging.getLogger("p2phost.plugin.dask-comm")

PROJECT_ENV = "P2PHOST_PROJECT"
KEY_ENV = "P2PHOST_DASK_KEY"
_MSGPACK = "application/msgpack"


@dataclass
class OpenNode:
    """A started node and its dask-comm app."""

    node: AsyncNode
    app: DaskCommApp

    @property
    def peer_id(self) -> str:
        """The node's peer id."""
        return self.node.peer_id

    async def close(self) -> None:
        """Stop the node (its peers see the streams end)."""
        await self.node.close()


def _identity() -> Identity:
    path = os.environ.get(KEY_ENV)
    if not path:
        return Identity.generate()
    key = Path(path)
    try:
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Identity.from_seed(bytes.fromhex(key.read_text().strip()))
    identity = Identity.generate()
    with os.fdopen(fd, "w") as out:
        out.write(identity.seed.hex() + "\n")
    return identity


async def open_dask_node() -> OpenNode:
    """Start this process's node from the project (see the module's docstring)."""
    try:
        import p2phost
    except ImportError as exc:  # pragma: no cover - p2phost-sdk without the host
        raise NoProject("the p2phost host is not installed in this environment",
                        fix="pip install p2phost") from exc
    start = Path(os.environ.get(PROJECT_ENV) or Path.cwd())
    failed = f"cannot open the p2phost node for Dask from {start}"
    try:
        # MessagePack first: Dask's frames are bytes. The manifest's own dask-comm app
        # (with its [config.dask-comm]) runs in place of this fallback when declared.
        node = p2phost.open_node(
            start, identity=_identity(), name=f"dask-{os.getpid()}", control=False,
            keep_state=False, codecs=[_MSGPACK], fallback_apps=[DaskCommApp()])
        await node.open()
    except p2phost.ProjectNotFound as exc:
        raise NoProject(f"{failed}: {exc.message}",
                        fix=f"export {PROJECT_ENV}=DIR, the p2phost project Dask's nodes "
                            "open from (p2phost init DIR makes one)") from exc
    except p2phost.CodecMissing as exc:
        raise NoProject(f"{exc.message}, which carries Dask's frames",
                        fix="p2phost plugin install msgpack-codec") from exc
    except p2phost.UserError as exc:
        raise NoProject(f"{failed}: {exc.message}", fix=exc.fix or "p2phost doctor") from exc
    try:
        app = node.app(DaskCommApp.name)
    except p2phost.LibraryError:  # another app plugin of the manifest took the topic
        app = None
    if not isinstance(app, DaskCommApp):
        await node.close()
        raise NoProject(f"{failed}: an app plugin of the project handles topic "
                        f"{DASK_TOPIC!r} in place of dask-comm",
                        fix="remove that plugin from [plugins] in p2phost.toml")
    log.info("p2phost node %s for Dask listens on %s", node.peer_id, ", ".join(node.addresses))
    return OpenNode(node, app)
