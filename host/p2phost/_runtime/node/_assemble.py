"""Build a node from a project: its manifest, identity and loaded plugins."""

from __future__ import annotations

from collections.abc import Sequence

from p2phost_sdk import App, Codec

from ..._errors import CodecMissing
from ..._observability import MetricsSettings
from ..._plugins import PluginManager
from ..._project import Project
from ..._trust import KNOWN_PEERS, KnownPeers, TrustPolicy
from ._node import Node, check_manifest_addresses
from ._options import NodeOptions, Overrides


def node_for_project(project: Project, *, client: bool = False,
                     apps: Sequence[App] = (), overrides: Overrides = Overrides()) -> Node:
    """The project's node, from the plugins its manifest declares.

    A *client* node (``p2phost send`` and ``ping``) listens nowhere, dials nothing on
    its own and runs no apps but those a transport's dialling needs (``App.client``). It
    speaks with the project's identity, so that peers whose trust policy admits the
    project admit its commands too; its hello says it is a client, so the node it reaches
    keeps it apart from the project's running node (even when that is the node it
    reaches), and on inbox media it reads a reply inbox of its own, never the node's.
    ``apps`` run beside the app plugins (a program's own, through
    :func:`p2phost.open_node`); ``overrides`` are that program's other options.
    """
    settings = project.manifest.node
    trust = project.manifest.trust
    identity = overrides.identity or project.identity()
    loaded = PluginManager(project).load()
    parts = loaded.build(identity.peer_id, settings.max_frame_size, identity)
    codecs = _ordered(parts.codecs, overrides.codecs, project)
    taken = {t for app in [*parts.apps, *apps] for t in app.handlers()}
    # A fallback app runs where no app plugin of the manifest serves its topics (one
    # that does may carry [config.NAME] the fallback lacks).
    fallback = [a for a in overrides.fallback_apps if not taken & set(a.handlers())]
    # Beside the project's node, its state (delivery database, replay guard) and its
    # metrics port are that node's; this one keeps its state in memory.
    stateless = client or not overrides.keep_state
    options = NodeOptions(
        name=overrides.name or settings.name,
        listen=() if client else tuple(settings.listen),
        connect=() if client else tuple(settings.connect),
        max_frame_size=settings.max_frame_size,
        peer_limit=settings.peer_limit,
        handshake_limit_per_source=settings.handshake_limit_per_source,
        keepalive_timeout=settings.keepalive_timeout,
        keepalive_interval=min(5.0, settings.keepalive_timeout / 3),
        client=client,
        replay_window=trust.replay_window,
        # A client keeps no outbox on disk: it waits for acknowledgements before it exits.
        state_dir=None if stateless else project.state_dir,
        delivery=project.manifest.delivery,
        # A client serves no metrics (the running node of the project may).
        metrics=MetricsSettings() if stateless else project.manifest.metrics,
    )
    node = Node(
        identity,
        transports=parts.transports,
        codecs=codecs,
        discovery=() if client else parts.discovery,
        security=parts.security,
        apps=[a for a in parts.apps if type(a).client] if client
        else [*parts.apps, *apps, *fallback],
        options=options,
        hooks=None if client else loaded.hook,
        admit=None if trust.policy == "open" else TrustPolicy(
            trust, KnownPeers(project.state_dir / KNOWN_PEERS)).check,
    )
    if not client:  # a malformed address in p2phost.toml is a usage error before start
        check_manifest_addresses(parts.transports, project.manifest)
    return node


def _ordered(codecs: dict[str, Codec], first: Sequence[str], project: Project
             ) -> dict[str, Codec]:
    """The loaded ``codecs`` with the content types ``first`` at the head, in that order:
    the order the node offers them in."""
    for content_type in first:
        if content_type not in codecs:
            raise CodecMissing(content_type, project.root)
    return {**{c: codecs[c] for c in first}, **codecs}
