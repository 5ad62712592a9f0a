"""p2phost: a plugin host for peer-to-peer messaging, and a library to use it from a program.

    async with p2phost.open_node(".") as node:          # the node of ./p2phost.toml
        reply = await node.request(peer, "echo", {"text": "hi"})

    with p2phost.connect(".") as node:                   # blocking, for scripts and notebooks
        node.request(peer, "echo", {"text": "hi"})

The guide is docs/library.md. Names load on first use, so ``import p2phost`` (and the
CLI's start-up) stays cheap.
"""

# Not typing.TYPE_CHECKING: importing typing would cost the CLI's start-up (type checkers
# know the name itself).
TYPE_CHECKING = False

__version__ = "0.1.0"

if TYPE_CHECKING:
    from p2phost_sdk import (
        App,
        BodyInvalid,
        Delivery,
        Message,
        ModelError,
        PeerInfo,
        PeerUnavailable,
        RemoteError,
        RequestTimeout,
        handler,
    )

    from ._errors import CodecMissing, ProjectNotFound, UserError
    from ._library import (
        AsyncNode,
        BlockingNode,
        HandlerError,
        IdentityInUse,
        LibraryError,
        NodeClosed,
        connect,
        open_node,
    )
    from ._runtime._errors import ConnectionRefusedByPeer, PeerNotTrusted
del TYPE_CHECKING

#: Where each exported name lives (loaded on first use).
_LAZY = {
    "AsyncNode": "p2phost._library",
    "BlockingNode": "p2phost._library",
    "HandlerError": "p2phost._library",
    "IdentityInUse": "p2phost._library",
    "LibraryError": "p2phost._library",
    "NodeClosed": "p2phost._library",
    "connect": "p2phost._library",
    "open_node": "p2phost._library",
    "UserError": "p2phost._errors",
    "CodecMissing": "p2phost._errors",
    "ProjectNotFound": "p2phost._errors",
    # What a refused dial's PeerUnavailable was raised from (its __cause__).
    "ConnectionRefusedByPeer": "p2phost._runtime._errors",
    "PeerNotTrusted": "p2phost._runtime._errors",
    # What a program needs from the SDK to write handlers and catch failures.
    "App": "p2phost_sdk",
    "BodyInvalid": "p2phost_sdk",
    "Delivery": "p2phost_sdk",
    "Message": "p2phost_sdk",
    "ModelError": "p2phost_sdk",
    "PeerInfo": "p2phost_sdk",
    "PeerUnavailable": "p2phost_sdk",
    "RemoteError": "p2phost_sdk",
    "RequestTimeout": "p2phost_sdk",
    "handler": "p2phost_sdk",
}

__all__ = [
    "App",
    "AsyncNode",
    "BlockingNode",
    "BodyInvalid",
    "CodecMissing",
    "ConnectionRefusedByPeer",
    "Delivery",
    "HandlerError",
    "IdentityInUse",
    "LibraryError",
    "Message",
    "ModelError",
    "NodeClosed",
    "PeerInfo",
    "PeerNotTrusted",
    "PeerUnavailable",
    "ProjectNotFound",
    "RemoteError",
    "RequestTimeout",
    "UserError",
    "__version__",
    "connect",
    "handler",
    "open_node",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'p2phost' has no attribute {name!r}")
    import importlib  # here: the CLI's start-up and warm install need none of these names

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
