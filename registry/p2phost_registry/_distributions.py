"""Plugin names and the distributions carrying them (tcp-transport: p2phost-tcp-transport).

The store keys everything by plugin name; a plugin's distribution name is read from its files'
names, so it needs no column of its own. ``/simple/`` serves distribution names (what pip and
uv ask for), and one distribution name belongs to one plugin only: a plugin cannot publish
under another plugin's distribution, nor change its own, or an index user could be handed
the wrong project.
"""

from __future__ import annotations

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from p2phost_sdk import normalize_name

from ._db import Tx
from ._errors import Conflict

#: p2phost's own distributions: not plugins, but served by /simple/ so that plugin authors
#: and users can install the SDK (which every plugin depends on) from a registry alone.
SUPPORT_DISTRIBUTIONS = frozenset({"p2phost-sdk", "p2phost", "p2phost-registry"})


def distribution_of(filename: str) -> str | None:
    """The normalised distribution name in a wheel's or sdist's file name."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def _like(distribution: str) -> str:
    # In LIKE, "_" matches one character: "-", "_" or "." in a legacy file name.
    return distribution.replace("-", "_") + "-%"


def plugin_of(tx: Tx, distribution: str) -> str | None:
    """The plugin whose files are of ``distribution``, if any."""
    wanted = normalize_name(distribution)
    for plugin, filename in tx.all(
        "SELECT plugin, filename FROM files WHERE lower(filename) LIKE ?", (_like(wanted),)
    ):
        if distribution_of(filename) == wanted:
            return str(plugin)
    return None


def distributions(tx: Tx) -> dict[str, str]:
    """Every plugin's distribution name, by plugin name."""
    out = {}
    for plugin, filename in tx.all("SELECT plugin, MIN(filename) FROM files GROUP BY plugin"):
        out[str(plugin)] = distribution_of(str(filename)) or str(plugin)
    return out


def check_distribution(tx: Tx, plugin: str, filename: str) -> None:
    """Refuse a file whose distribution is another plugin's, or not this plugin's own."""
    distribution = distribution_of(filename)
    if distribution is None:
        return  # validation already refused the name
    row = tx.one("SELECT filename FROM files WHERE plugin = ? LIMIT 1", (plugin,))
    own = distribution_of(str(row[0])) if row else None
    if own is not None and own != distribution:
        raise Conflict(
            f"{filename}: the plugin {plugin} is published as the distribution {own}, not "
            f"{distribution}; keep [project] name = \"{own}\" in its pyproject.toml")
    other = plugin_of(tx, distribution)
    if other is not None and other != plugin:
        raise Conflict(
            f"{filename}: the distribution {distribution} carries the plugin {other}, not "
            f"{plugin}; give this plugin its own distribution name (p2phost-{plugin})")
