"""Noise channel security for p2phost: Noise XX with each node's peer id proven."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import PluginContext, Security, hookimpl

from ._connection import NoiseConnection
from ._security import NoiseSecurity

__all__ = ["NoiseConnection", "NoiseSecurity", "p2phost_security"]


@hookimpl
def p2phost_security(context: PluginContext) -> Sequence[Security]:
    """Noise security, with the node's frame size limit."""
    return [NoiseSecurity(max_frame_size=context.max_frame_size)]
