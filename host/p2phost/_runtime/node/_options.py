"""How a node runs: ``[node]`` of p2phost.toml, and tuning with safe defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from p2phost_sdk import Backoff

from ..._delivery_settings import DeliverySettings
from ..._observability._settings import MetricsSettings

if TYPE_CHECKING:  # the crypto libraries load only where a node signs
    from p2phost_sdk import App, Identity


@dataclass(frozen=True)
class NodeOptions:
    """How a node runs. ``listen``, ``connect``, ``max_frame_size``, ``peer_limit``,
    ``handshake_limit_per_source`` and ``keepalive_timeout`` come from ``[node]`` in
    p2phost.toml; the rest are tuning with safe defaults."""

    name: str = "node"
    listen: Sequence[str] = ()
    #: Addresses dialled at start and kept connected (reconnect with backoff).
    connect: Sequence[str] = ()
    max_frame_size: int = 16 * 1024 * 1024
    #: Peers (and clients) admitted at once; handshakes in progress do not count.
    peer_limit: int = 64
    #: Handshakes in progress at once, in all and from one source host or IPv6 /64
    #: (``[node] handshake-limit-per-source``; see ``_admission``).
    handshake_limit: int = 128
    handshake_limit_per_source: int = 8
    dial_timeout: float = 5.0
    handshake_timeout: float = 5.0
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 15.0
    reconnect: Backoff = field(default_factory=Backoff)
    #: How long shutdown waits, in all, for acknowledgements, peers' goodbyes and then the
    #: mailboxes to drain (one deadline; the hand-over of the last bytes comes after).
    drain_timeout: float = 10.0
    #: How long a plugin may take to listen, start, stop or close before the node
    #: gives up on it (naming it).
    plugin_timeout: float = 10.0
    #: Bytes queued per connection before senders wait (backpressure).
    outbox_limit: int = 1024 * 1024
    #: A short-lived client (``p2phost send``/``ping``) with its project's identity: its
    #: hello says so, and the node it talks to keeps its channel apart from the peers.
    client: bool = False
    #: Seconds a sealed frame (inbox media) stays acceptable: ``[trust] replay-window``.
    replay_window: float = 600.0
    #: Where the delivery database lives (``.p2phost``); None keeps it in memory.
    state_dir: Path | None = None
    #: ``[delivery]`` of p2phost.toml (docs/delivery.md).
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    #: ``[metrics]`` of p2phost.toml (docs/operations.md).
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


@dataclass(frozen=True)
class Overrides:
    """What a program opening the node (:func:`p2phost.open_node`) puts in place of the
    project's: see its docstring. The defaults are the project's node as ``run`` runs it.
    ``keep_state=False`` keeps the delivery state in memory and serves no metrics port:
    beside the project's own node, both are that node's."""

    identity: Identity | None = None
    name: str | None = None
    keep_state: bool = True
    codecs: Sequence[str] = ()
    fallback_apps: Sequence[App] = ()
