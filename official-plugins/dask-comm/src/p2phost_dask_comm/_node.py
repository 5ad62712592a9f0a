"""Open the p2phost node of a Dask process, from a p2phost project.

The one module of this plugin that imports the host (``p2phost``), not only the SDK:
the Dask backend runs in Dask's processes, where no ``p2phost run`` built a node. It
uses the host's node assembly directly (``PluginManager``, ``Node``), as
``p2phost run`` does, until the host's library API (``p2phost.open_node``) can open a
node with an identity of its own; keep it the only such place.

The project is ``$P2PHOST_PROJECT`` (or the working directory, or a parent): its
manifest says which transports, security, codecs and discovery the node runs and where
it listens (``tcp://127.0.0.1:0``: every Dask process gets its own port). Every Dask
process is a peer of its own, with a fresh identity (so a scheduler's address changes
with every start, as a port-0 TCP one does), unless ``$P2PHOST_DASK_KEY`` names a key
file, created on first use: a scheduler that keeps its address across restarts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2phost_sdk import Identity

from ._app import DASK_TOPIC, DaskCommApp
from ._errors import NoProject

log = logging.getLogger("p2phost.plugin.dask-comm")

PROJECT_ENV = "P2PHOST_PROJECT"
KEY_ENV = "P2PHOST_DASK_KEY"
_MSGPACK = "application/msgpack"


@dataclass
class OpenNode:
    """A started node and its dask-comm app."""

    node: Any
    app: DaskCommApp

    @property
    def peer_id(self) -> str:
        """The node's peer id."""
        return str(self.node.peer_id)

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
        from p2phost._errors import ProjectNotFound, UserError
        from p2phost._plugins import PluginManager
        from p2phost._project import Project
        from p2phost._runtime import Node, NodeOptions
        from p2phost._trust import KNOWN_PEERS, KnownPeers, TrustPolicy
    except ImportError as exc:  # pragma: no cover - p2phost-sdk without the host
        raise NoProject("the p2phost host is not installed in this environment",
                        fix="pip install p2phost") from exc
    start = Path(os.environ.get(PROJECT_ENV) or Path.cwd())
    try:
        project = Project.find(start)
        manifest = project.manifest
        identity = _identity()
        loaded = PluginManager(project).load()
        parts = loaded.build(identity.peer_id, manifest.node.max_frame_size)
    except UserError as exc:
        fix = (f"export {PROJECT_ENV}=DIR, the p2phost project Dask's nodes open from "
               "(p2phost init DIR makes one)") if isinstance(exc, ProjectNotFound) \
            else exc.fix or "p2phost doctor"
        raise NoProject(f"cannot open the p2phost node for Dask from {start}: {exc.message}",
                        fix=fix) from exc
    if _MSGPACK not in parts.codecs:
        raise NoProject(f"the p2phost project at {project.root} has no MessagePack codec, "
                        "which carries Dask's frames", fix="p2phost plugin install msgpack-codec")
    app = next((a for a in parts.apps if isinstance(a, DaskCommApp)), None)
    apps = [a for a in parts.apps if DASK_TOPIC not in a.handlers()]
    app = app or DaskCommApp()
    # The node offers its codecs in this order: Dask's bytes need MessagePack.
    codecs = {_MSGPACK: parts.codecs[_MSGPACK], **parts.codecs}
    trust = manifest.trust
    options = NodeOptions(
        name=f"dask-{os.getpid()}", listen=tuple(manifest.node.listen),
        connect=tuple(manifest.node.connect), max_frame_size=manifest.node.max_frame_size,
        peer_limit=manifest.node.peer_limit, replay_window=trust.replay_window,
        state_dir=None, delivery=manifest.delivery)
    node = Node(identity, transports=parts.transports, codecs=codecs,
                discovery=parts.discovery, security=parts.security, apps=[*apps, app],
                options=options, hooks=loaded.hook,
                admit=None if trust.policy == "open" else TrustPolicy(
                    trust, KnownPeers(project.state_dir / KNOWN_PEERS)).check)
    await node.start()
    log.info("p2phost node %s for Dask listens on %s", node.peer_id, ", ".join(node.addresses))
    return OpenNode(node, app)
