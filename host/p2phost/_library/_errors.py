"""Errors of p2phost used as a library (``open_node``, ``connect``)::

    UserError                      (p2phost._errors) says what is wrong and the fix
    └── LibraryError               the library API was used in a way it cannot serve
        ├── NodeClosed             the node was closed (or never opened) before the call
        ├── IdentityInUse          this process has a node of that identity open already
        └── HandlerError           a handler cannot be registered (topic taken, too late)

Errors of the node itself pass through unchanged: a project whose plugins are missing
raises the same ``PluginLoadError`` as ``p2phost run``, a failed request the SDK's
``RemoteError``, ``RequestTimeout`` or ``PeerUnavailable``; a refused dial's
``PeerUnavailable`` is raised from ``ConnectionRefusedByPeer`` (the peer refused) or
``PeerNotTrusted`` (this node's trust policy did), both exported by ``p2phost``. Two
more of the host's are exported for a program to catch: ``ProjectNotFound`` (no
p2phost.toml where ``open_node(DIR)`` looked) and ``CodecMissing`` (``codecs=`` names a
content type no plugin of the project provides).
"""

from __future__ import annotations

from .._errors import UserError


class LibraryError(UserError):
    """The library API was used in a way it cannot serve."""


class NodeClosed(LibraryError):
    """A call on a node that is closed, or not opened yet."""


class IdentityInUse(LibraryError):
    """A second node of one identity in one process: peers could not tell them apart."""

    def __init__(self, peer_id: str, where: str) -> None:
        self.peer_id = peer_id
        super().__init__(
            f"a node of peer id {peer_id} ({where}) is already open in this process",
            fix="use the node that is open (pass it where it is needed), close it first, "
                "or give this one its own project or state_dir")


class HandlerError(LibraryError):
    """A handler cannot be registered: its topic is taken, or the node runs already."""
