"""Dask over p2phost: a ``distributed.comm`` backend for ``p2phost://PEERID`` addresses.

A Dask scheduler, its workers and clients talk over p2phost connections: each Dask
process opens a p2phost node from the project named by ``$P2PHOST_PROJECT`` (its
transports, security, codecs and discovery), and every Dask comm is a stream of
messages on topic ``dask-comm`` between two nodes. Dask's messages are its own
(``to_frames``/``from_frames``); large frames travel in parts. docs/bridges.md has a
worked example.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import App, PluginContext, hookimpl

from ._address import SCHEME, Address
from ._app import DASK_TOPIC, DaskCommApp
from ._backend import P2PHostBackend
from ._comm import P2PHostComm, P2PHostConnector, P2PHostListener
from ._errors import BadAddress, DaskCommError, NoListener, NoProject, PeerNotReached
from ._holder import NodeHolder
from ._node import KEY_ENV, PROJECT_ENV

__all__ = [
    "DASK_TOPIC",
    "KEY_ENV",
    "PROJECT_ENV",
    "SCHEME",
    "Address",
    "BadAddress",
    "DaskCommApp",
    "DaskCommError",
    "NoListener",
    "NoProject",
    "NodeHolder",
    "P2PHostBackend",
    "P2PHostComm",
    "P2PHostConnector",
    "P2PHostListener",
    "PeerNotReached",
    "p2phost_apps",
]


@hookimpl
def p2phost_apps(context: PluginContext) -> Sequence[App]:
    """The dask-comm app, with ``[config.dask-comm]``."""
    return [DaskCommApp(chunk_size=int(context.config.get("chunk-size", 1024 * 1024)),
                        stream_buffer=int(context.config.get("stream-buffer",
                                                             256 * 1024 * 1024)))]
