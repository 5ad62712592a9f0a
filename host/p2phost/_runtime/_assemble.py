"""Build a node from a project: its manifest, identity and loaded plugins."""

from __future__ import annotations

from p2phost_sdk import Identity

from .._plugins import PluginManager
from .._project import Project
from ._node import Node, NodeOptions


def node_for_project(project: Project, *, client: bool = False) -> Node:
    """The project's node, from the plugins its manifest declares.

    A *client* node (``p2phost send`` and ``ping``) uses a fresh identity, listens
    nowhere, dials nothing on its own and runs no apps: it must not pass itself off as
    the project's running node, nor take that node's messages.
    """
    settings = project.manifest.node
    identity = Identity.generate() if client else project.identity()
    loaded = PluginManager(project).load()
    parts = loaded.build(identity.peer_id, settings.max_frame_size)
    options = NodeOptions(
        name=settings.name,
        listen=() if client else tuple(settings.listen),
        connect=() if client else tuple(settings.connect),
        max_frame_size=settings.max_frame_size,
        peer_limit=settings.peer_limit,
    )
    return Node(
        identity,
        transports=parts.transports,
        codecs=parts.codecs,
        discovery=() if client else parts.discovery,
        security=parts.security,
        apps=() if client else parts.apps,
        options=options,
        hooks=None if client else loaded.hook,
    )
