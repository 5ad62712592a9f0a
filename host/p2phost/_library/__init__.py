"""p2phost as a library: a project's node in any program.

``open_node`` (asyncio) and ``connect`` (blocking, the loop in a background thread) open
the node ``p2phost run`` would run, with the program's own handlers and apps beside the
manifest's app plugins. The guide is docs/library.md.
"""

from ._blocking import BlockingNode, connect
from ._errors import HandlerError, IdentityInUse, LibraryError, NodeClosed
from ._node import AsyncNode, open_node

__all__ = [
    "AsyncNode",
    "BlockingNode",
    "HandlerError",
    "IdentityInUse",
    "LibraryError",
    "NodeClosed",
    "connect",
    "open_node",
]
