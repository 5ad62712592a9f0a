"""Which transport plugin serves an address's scheme, and which one to install when none does.

A transport declares its schemes in its metadata (``[tool.p2phost.provides] schemes``), so
the answer comes from metadata alone: the plugins installed here, then the registries'
transports. Nothing is imported or started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from p2phost_sdk import PluginMetadata

from ._errors import UserError

if TYPE_CHECKING:
    from ._manifest import Manifest
    from ._project import Project


def scheme_of(address: str) -> str:
    """``tcp`` for ``tcp://127.0.0.1:7400``; "" when the address has no scheme."""
    return address.split("://", 1)[0].lower() if "://" in address else ""


def manifest_addresses(manifest: Manifest) -> list[tuple[str, str]]:
    """``(where, address)`` for every address ``p2phost.toml`` lists: ``[node] listen``
    and ``connect``, and static discovery's peers (dialled like ``connect``)."""
    peers = manifest.config.get("static-discovery", {}).get("peers", [])
    static = [a for a in peers if isinstance(a, str)] if isinstance(peers, list) else []
    return [(where, address)
            for where, addresses in (("[node] listen", manifest.node.listen),
                                     ("[node] connect", manifest.node.connect),
                                     ("[config.static-discovery] peers", static))
            for address in addresses]


#: The official transport for each scheme: what ``p2phost init --listen`` declares (no
#: registry asked: init works offline). tests/cli/test_listen_schemes.py checks it against
#: the official plugins' metadata.
OFFICIAL_TRANSPORTS = {
    "tcp": "tcp-transport", "quic": "quic-transport", "ws": "websocket-transport",
    "mem": "memory-transport", "redis": "redis-transport", "nats": "nats-transport",
    "amqp": "amqp-transport", "mqtt": "mqtt-transport", "postgresql": "postgres-transport",
    "postgres": "postgres-transport",
}


def official_transports(scheme: str) -> list[str] | None:
    """The official plugins that serve ``scheme`` (``relay+tcp``: the relay, and the
    transport it is dialled over); None when no official plugin does."""
    if scheme.startswith("relay+"):
        inner = official_transports(scheme.removeprefix("relay+"))
        return None if inner is None else [*inner, "relay"]
    name = OFFICIAL_TRANSPORTS.get(scheme)
    return None if name is None else [name]


def unserved(project: Project, metadata: list[PluginMetadata], *,
             listen_only: bool = False) -> list[tuple[str, str, UserError | None]]:
    """``(where, address, error)`` for every address ``p2phost.toml`` lists (error None
    when a declared transport serves it): the one check of ``run``, ``run --check`` and
    ``doctor``, so all three say the same and give the same fix. ``listen_only``: only
    ``[node] listen`` (what ``run`` cannot start without; a connect address or a static
    peer it cannot dial is a warning it repeats, and a failure in ``doctor``)."""
    from ._install import plugin_sources

    served = served_by(metadata)
    found: list[tuple[str, str, UserError | None]] = []
    for where, address in manifest_addresses(project.manifest):
        if listen_only and where != "[node] listen":
            continue
        error = None
        if scheme_of(address) not in served:
            error = no_transport(address, where, served, metadata,
                                 plugin_sources(None, project.manifest.registries))
        found.append((where, address, error))
    return found


def served_by(metadata: Iterable[PluginMetadata]) -> dict[str, str]:
    """scheme -> the plugin (of ``metadata``) whose transport serves it."""
    served: dict[str, str] = {}
    for meta in metadata:
        if "transport" in meta.kinds:
            for scheme in meta.provides.get("schemes", ()):
                served.setdefault(scheme.lower(), meta.name)
    return served


def providers(scheme: str, installed: Iterable[PluginMetadata],
              registries: list[str]) -> list[str]:
    """The plugins that provide ``scheme``: installed ones first, then the registries'.

    An unreachable registry is no answer rather than an error: this only picks a fix.
    """
    local = [n for s, n in served_by(installed).items() if s == scheme]
    if local:
        return local
    from ._install import RegistryClient, RegistryError

    client = RegistryClient(registries)
    found: list[str] = []
    try:
        for row in client.search("", "transport"):
            newest = client.plugin(str(row["name"])).newest_fitting()
            if newest and scheme in (s.lower() for s in newest.provides.get("schemes", ())):
                found.append(newest.name)
    except (RegistryError, OSError):
        pass
    return found


def no_transport(address: str, where: str, served: Mapping[str, str],
                 installed: Iterable[PluginMetadata], registries: list[str]) -> UserError:
    """The error for ``address`` (named by ``where``) when no loaded transport serves it."""
    scheme = scheme_of(address)
    if not scheme:  # redis:/x, h:1: malformed, and its fix is of the scheme it meant
        from p2phost_sdk import AddressError

        from ._address_form import check_form

        try:
            check_form(address, peer=where != "[node] listen")
        except AddressError as exc:
            place = f"in {where} of p2phost.toml, " if where.startswith("[") else ""
            return UserError(f"{where}: {exc}", fix=f"{place}write the address as {exc.expected}")
    have = ", ".join(f"{s}:// ({n})" for s, n in sorted(served.items())) or "none"
    names = providers(scheme, installed, registries)
    fix = f"p2phost plugin install {names[0]}" if names else \
        f"p2phost plugin search {scheme} --kind transport"
    return UserError(f"{where}: no transport plugin serves {scheme}:// in "
                     f"{address!r} (transports here: {have})", fix=fix)
