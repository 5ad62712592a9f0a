"""The node p2phost-sdk's app conformance kit runs apps on (entry point ``p2phost_sdk.node``).

The SDK never imports the host: it finds this factory through the entry point, so its kit
tests apps on the real runtime whenever p2phost is installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from p2phost_sdk import App, Codec, Identity, Transport

from ._runtime import Node, NodeOptions


def make_node(identity: Identity, *, transports: Mapping[str, Transport],
              codecs: Mapping[str, Codec], apps: Sequence[App], name: str,
              listen: Sequence[str], drain_timeout: float) -> Any:
    """A node (not started) with these plugins' objects, listening on ``listen``."""
    options = NodeOptions(name=name, listen=list(listen), drain_timeout=drain_timeout)
    return Node(identity, transports=dict(transports), codecs=dict(codecs), apps=list(apps),
                options=options)
