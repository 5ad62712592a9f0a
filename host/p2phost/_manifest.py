"""``p2phost.toml``: the project manifest, read with clear errors and edited in place.

Reading uses :mod:`tomllib` and checks the whole file, collecting every problem with
its line, so ``p2phost doctor`` can list them all and other commands stop at the first.
Editing uses tomlkit, which keeps the user's comments and layout.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier

from p2phost_sdk import is_valid_name, normalize_name, parse_specifier

from ._address_form import suggest
from ._delivery_settings import DeliverySettings, read_delivery
from ._errors import ManifestError
from ._observability._settings import MetricsSettings, read_metrics
from ._suggest import close_names, did_you_mean
from ._toml_lines import decode_error_line, find_line
from ._trust import TrustSettings, read_trust

MANIFEST_NAME = "p2phost.toml"
#: How a registry URL is written, for fixes.
REGISTRY_URL_FORM = "http://HOST:PORT"


def is_registry_url(url: str) -> bool:
    """Whether ``url`` is an http(s) URL with a host (and a number for a port, if any)."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


#: The registry used when nothing else names one.
DEFAULT_REGISTRY = "http://127.0.0.1:8470"

TOP_LEVEL_KEYS = ("node", "registry", "plugins", "config", "delivery", "trust", "metrics")
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class NodeSettings:
    """The ``[node]`` table."""

    name: str = "node"
    listen: list[str] = field(default_factory=list)
    connect: list[str] = field(default_factory=list)
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    peer_limit: int = 64
    #: Handshakes in progress at once from one source host (more are refused at once).
    handshake_limit_per_source: int = 8
    #: ``p2phost run``'s event loop: "auto" (uvloop where installed), "uvloop", "asyncio".
    event_loop: str = "auto"
    #: Seconds a peer may send nothing, or take nothing written to it, before its
    #: connection is closed.
    keepalive_timeout: float = 15.0


# [node] key -> (attribute, expected type name, check)
_NODE_FIELDS: dict[str, tuple[str, str]] = {
    "name": ("name", "str"),
    "listen": ("listen", "list[str]"),
    "connect": ("connect", "list[str]"),
    "max-frame-size": ("max_frame_size", "int"),
    "peer-limit": ("peer_limit", "int"),
    "handshake-limit-per-source": ("handshake_limit_per_source", "int"),
    "event-loop": ("event_loop", "str"),
    "keepalive-timeout": ("keepalive_timeout", "number"),
}
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
#: The range of ``keepalive-timeout`` (seconds): the keepalive pings at a third of it.
KEEPALIVE_TIMEOUTS = (2.0, 3600.0)


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "str":
        return isinstance(value, str)
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@dataclass(frozen=True)
class Manifest:
    """A validated ``p2phost.toml``."""

    path: Path
    text: str
    node: NodeSettings
    registries: list[str]
    #: normalised plugin name -> PEP 440 specifier ("*" means any), in file order.
    plugins: dict[str, str]
    #: normalised plugin name -> its ``[config.NAME]`` table.
    config: dict[str, dict[str, Any]]
    #: ``[registry] require-signed``: refuse plugins without a publisher signature.
    require_signed: bool = False
    #: ``[delivery]``: acknowledged delivery settings and per-topic overrides.
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    #: ``[trust]``: which peers this node accepts (see p2phost._trust).
    trust: TrustSettings = field(default_factory=TrustSettings)
    #: ``[metrics]``: where the node serves Prometheus metrics (docs/operations.md).
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and validate; raises the first :class:`ManifestError`."""
        manifest, problems = cls.check(path)
        if problems:
            raise problems[0]
        assert manifest is not None
        return manifest

    @classmethod
    def check(cls, path: Path) -> tuple[Manifest | None, list[ManifestError]]:
        """Read and validate, returning every problem found (for ``doctor``)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return None, [ManifestError(path, None, "", f"cannot read: {exc.strerror}",
                                        fix="p2phost init")]
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = decode_error_line(exc)
            return None, [ManifestError(path, line, "", f"not valid TOML: {exc}")]
        return _Reader(path, text).read(data)

    def line_of(self, table: str, key: str | None = None) -> int | None:
        """The line of ``key`` in ``[table]``, for error messages."""
        return find_line(self.text, table, key)

    def error(self, table: str, key: str | None, message: str, *,
              fix: str | None = None) -> ManifestError:
        """A :class:`ManifestError` pointing at ``[table] key`` in this file."""
        where = f"{table}.{key}" if key else f"[{table}]"
        return ManifestError(self.path, self.line_of(table, key), where, message, fix=fix)


class _Reader:
    """Validates parsed manifest data, remembering every problem."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text = path, text
        self.problems: list[ManifestError] = []

    def problem(self, table: str, key: str | None, message: str, fix: str | None = None) -> None:
        where = f"{table}.{key}" if key else f"[{table}]" if table else ""
        line = find_line(self.text, table, key) if table else None
        self.problems.append(ManifestError(self.path, line, where, message, fix=fix))

    def read(self, data: dict[str, Any]) -> tuple[Manifest | None, list[ManifestError]]:
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                line = find_line(self.text, key) or find_line(self.text, "", key)
                self.problems.append(ManifestError(
                    self.path, line, key,
                    f"unknown top-level key (known: {', '.join(TOP_LEVEL_KEYS)})",
                    fix=f"remove or rename {key!r}",
                ))
        node = self.read_node(self.table(data, "node"))
        registry = self.table(data, "registry")
        registries = self.read_registries(registry)
        plugins = self.read_plugins(self.table(data, "plugins"))
        config = self.read_config(self.table(data, "config"), plugins)
        require_signed = registry.get("require-signed", False)
        if not isinstance(require_signed, bool):
            self.problem("registry", "require-signed", f"expected true or false, got "
                         f"{require_signed!r}")
            require_signed = False
        delivery = read_delivery(self.table(data, "delivery"), self.problem)
        trust = read_trust(self.table(data, "trust"), self.problem)
        metrics = read_metrics(self.table(data, "metrics"), self.problem)
        manifest = Manifest(self.path, self.text, node, registries, plugins, config,
                            require_signed, delivery,
                            trust=trust, metrics=metrics)
        return manifest, self.problems

    def table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.problem("", None, f"{name}: expected a table [{name}]")
            return {}
        return value

    def read_node(self, table: dict[str, Any]) -> NodeSettings:
        values: dict[str, Any] = {}
        for key, value in table.items():
            spec = _NODE_FIELDS.get(key)
            if spec is None:
                self.problem("node", key, f"unknown key (known: {', '.join(_NODE_FIELDS)})")
            elif not _type_ok(spec[1], value):
                expected = {"int": "a positive int", "number": "a number of seconds"}.get(
                    spec[1], spec[1])
                # A number's fix is its default (the line as `p2phost init` would have it).
                fix = f"{key} = {getattr(NodeSettings(), spec[0])}" \
                    if spec[1] in ("int", "number") else None
                self.problem("node", key, f"expected {expected}, got {value!r}", fix=fix)
            else:
                values[spec[0]] = value
        if values.get("event_loop", "auto") not in EVENT_LOOPS:
            self.problem("node", "event-loop", f"expected one of {', '.join(EVENT_LOOPS)}, "
                         f"got {values.pop('event_loop')!r}",
                         fix='event-loop = "auto" (uvloop where it is installed)')
        low, high = KEEPALIVE_TIMEOUTS
        if not low <= values.get("keepalive_timeout", low) <= high:  # nan fails too
            self.problem("node", "keepalive-timeout", f"expected seconds from {low:g} to "
                         f"{high:g}, got {values.pop('keepalive_timeout')!r}",
                         fix="keepalive-timeout = 15")
        for address in values.get("listen", []) + values.get("connect", []):
            if "://" not in address:
                listen = address in values.get("listen", [])
                fix = suggest(address, peer=not listen)  # redis:/x: of the scheme it meant
                self.problem("node", "listen" if listen else "connect",
                             f"bad address {address!r}: malformed, it is not an address URL: "
                             "`scheme://` expected", fix=f"write the address as {fix}")
        return NodeSettings(**values)

    def read_registries(self, table: dict[str, Any]) -> list[str]:
        url = table.get("url", [])
        urls = [url] if isinstance(url, str) else url
        for key in table:
            if key not in ("url", "require-signed"):
                self.problem("registry", key, "unknown key (known: url, require-signed)")
        if not isinstance(urls, list) or not all(
            isinstance(u, str) and is_registry_url(u) for u in urls
        ):
            self.problem("registry", "url", f"expected an http(s) URL or a list of them, "
                         f"got {url!r}", fix=f'write it as "{REGISTRY_URL_FORM}"')
            return []
        return [u.rstrip("/") for u in urls]

    def read_plugins(self, table: dict[str, Any]) -> dict[str, str]:
        plugins: dict[str, str] = {}
        seen: dict[str, str] = {}
        for name, spec in table.items():
            if not is_valid_name(name):
                self.problem("plugins", name, "not a valid plugin name",
                             fix="use letters, digits, '-', '_' and '.' (e.g. tcp-transport)")
                continue
            norm = normalize_name(name)
            if norm in seen:
                self.problem("plugins", name, f"declared twice (also as {seen[norm]!r})",
                             fix=f"keep one of {seen[norm]!r} and {name!r}")
                continue
            seen[norm] = name
            if not isinstance(spec, str):
                self.problem("plugins", name, f"expected a version specifier string, got {spec!r}",
                             fix=f'{name} = "*" (any version) or "{name} = \\">=1.0,<2\\""')
                continue
            try:
                parse_specifier(spec)
            except InvalidSpecifier:
                self.problem("plugins", name, f"{spec!r} is not a PEP 440 version specifier",
                             fix=f'{name} = ">=1.0,<2" or "*" for any version')
                continue
            plugins[norm] = spec
        return plugins

    def read_config(
        self, table: dict[str, Any], plugins: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        config: dict[str, dict[str, Any]] = {}
        for name, values in table.items():
            norm = normalize_name(name)
            if not isinstance(values, dict):
                self.problem("config", name, "expected a table [config.NAME]")
            elif norm not in plugins:
                close = close_names(norm, plugins)
                self.problem(f"config.{name}", None, f"configures plugin {name!r}, which "
                             "[plugins] does not declare" + did_you_mean(norm, plugins),
                             fix=f"rename [config.{name}] to [config.{close[0]}]" if close
                             else f"p2phost plugin install {name}, or remove [config.{name}]")
            else:
                config[norm] = values
        return config


class ManifestEditor:
    """Edits ``p2phost.toml`` in place, keeping comments and layout."""

    def __init__(self, path: Path) -> None:
        import tomlkit  # only commands that edit the manifest pay for it

        self.path = path
        self.document = tomlkit.parse(path.read_text(encoding="utf-8"))

    def _plugins(self) -> Any:
        if "plugins" not in self.document:
            import tomlkit

            self.document["plugins"] = tomlkit.table()
        return self.document["plugins"]

    def set_plugin(self, name: str, spec: str) -> None:
        """Declare ``name = spec`` (replacing any spelling of the same name)."""
        table = self._plugins()
        for key in list(table):
            if normalize_name(key) == normalize_name(name):
                table[key] = spec
                return
        table[name] = spec

    def remove_plugin(self, name: str) -> bool:
        """Remove ``name`` (and its ``[config.NAME]``); whether it was declared."""
        table = self._plugins()
        found = False
        for key in list(table):
            if normalize_name(key) == normalize_name(name):
                del table[key]
                found = True
        config = self.document.get("config")
        if config is not None:
            for key in list(config):
                if normalize_name(key) == normalize_name(name):
                    del config[key]
        return found

    def save(self) -> None:
        """Write the file atomically."""
        tmp = self.path.with_suffix(".toml.tmp")
        tmp.write_text(self.document.as_string(), encoding="utf-8")
        tmp.replace(self.path)
