"""What the host hands a plugin when it asks it for its parts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PluginContext:
    """One plugin's view of the node it is loaded into."""

    #: The plugin's own (normalised) name.
    name: str
    #: The plugin's ``[config.NAME]`` table, validated against its schema, defaults filled in.
    config: Mapping[str, Any]
    #: This node's peer id.
    peer_id: str
    #: A directory this plugin may keep state in (under ``.p2phost/state/NAME``).
    state_dir: Path
    #: The largest frame the node accepts or sends, in bytes.
    max_frame_size: int = 16 * 1024 * 1024
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("p2phost.plugin"))
    #: Signs bytes with this node's key, for this plugin: the signature covers
    #: ``plugin_payload(name, data)``, so peers check it with
    #: ``verify(peer_id, signature, plugin_payload(name, data))``. None where the host
    #: lends no key (a conformance kit, an older host).
    sign: Callable[[bytes], bytes] | None = None
