"""The host's pluggy hooks. Plugins implement them with :data:`hookimpl`.

A plugin is a module (or object) named by an entry point in the group
``p2phost.plugins``. The host calls each ``p2phost_*`` factory hook once per plugin,
with that plugin's own :class:`PluginContext`, and wires what it returns into the node.
Lifecycle and peer hooks are plain notifications; they must not block.

Example::

    from p2phost_sdk import hookimpl

    @hookimpl
    def p2phost_codecs(context):
        return [JsonCodec()]
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from ._app import App, PeerInfo
from ._codec import Codec
from ._context import PluginContext
from ._discovery import Discovery
from ._names import PLUGGY_PROJECT_NAME
from ._security import Security
from ._transport import Transport

hookspec: pluggy.HookspecMarker = pluggy.HookspecMarker(PLUGGY_PROJECT_NAME)
#: Marks a function of a plugin as the implementation of one of the host's hooks.
hookimpl: pluggy.HookimplMarker = pluggy.HookimplMarker(PLUGGY_PROJECT_NAME)


class HookSpecs:
    """The hooks a plugin may implement. Every one is optional."""

    @hookspec
    def p2phost_transports(self, context: PluginContext) -> Sequence[Transport]:
        """Transports this plugin provides (each serves its ``schemes``)."""
        raise NotImplementedError

    @hookspec
    def p2phost_codecs(self, context: PluginContext) -> Sequence[Codec]:
        """Codecs this plugin provides (each for its ``content_type``)."""
        raise NotImplementedError

    @hookspec
    def p2phost_discovery(self, context: PluginContext) -> Sequence[Discovery]:
        """Discovery mechanisms this plugin provides."""
        raise NotImplementedError

    @hookspec
    def p2phost_security(self, context: PluginContext) -> Sequence[Security]:
        """Channel security protocols this plugin provides."""
        raise NotImplementedError

    @hookspec
    def p2phost_apps(self, context: PluginContext) -> Sequence[App]:
        """App modules this plugin provides."""
        raise NotImplementedError

    @hookspec
    def p2phost_node_started(self, peer_id: str, addresses: list[str]) -> None:
        """The node is listening on ``addresses``."""

    @hookspec
    def p2phost_node_stopping(self, peer_id: str) -> None:
        """The node is shutting down."""

    @hookspec
    def p2phost_peer_connected(self, peer: PeerInfo) -> None:
        """A peer completed the handshake."""

    @hookspec
    def p2phost_peer_lost(self, peer: PeerInfo, reason: str) -> None:
        """A peer's connection is gone (``reason`` says why)."""
