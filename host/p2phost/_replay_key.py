"""What a replay record (:mod:`p2phost._replay`) is keyed by, and where it is kept.

A record stands for as long as everything the full installer's decision depended on is
unchanged: :func:`snapshot` takes the project (manifest and lock bytes, the plugin
environment's files), :func:`host_stamp` this host (Python, p2phost's and the SDK's
sources, ``sys.path``, the installer's variables, the built-in source), :func:`key` joins
them as a record holds them and :func:`record_path` names the record's file. The full
installer (:mod:`p2phost._install._record`) takes them before and after it runs, the replay
before it acts; like the replay, this imports only ``os`` and ``sys`` (and ``zlib``).
"""

from __future__ import annotations

import os
import sys
import zlib

from . import __version__

# Not typing.TYPE_CHECKING: importing typing costs more than a replay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    #: (root, manifest bytes, lock bytes or None, environment), the environment being None
    #: (no ``.p2phost/env``), False (something a replay does not handle) or (the active
    #: generation's link, its files as :func:`file_stamps` gives them).
    Snapshot: TypeAlias = tuple[str, bytes, bytes | None, Any]

#: Changes whenever what a record holds or means changes: older records are then misses.
FORMAT = 3
MANIFEST = "p2phost.toml"
LOCK = "p2phost.lock"
STATE = ".p2phost"
#: The variables the full installer reads that can change what it does.
VARIABLES = ("P2PHOST_REGISTRY", "P2PHOST_BUILTIN_DIR", "P2PHOST_TIMEOUT")
#: What makes a directory on sys.path hold distributions (importlib.metadata's view).
_DISTRIBUTIONS = (".dist-info", ".egg-info", ".pth")
_HERE = os.path.dirname(os.path.realpath(__file__))  # as the installer resolves it


class Doubt(Exception):
    """Something differs from the record: the full installer decides."""


def cache_dir() -> str:
    """The download cache's directory, as ``_install._cache.default_cache_dir`` says."""
    explicit = os.environ.get("P2PHOST_CACHE_DIR")
    if explicit:
        return os.path.normpath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.normpath(os.path.join(base, "p2phost"))


def find_root(start: str) -> str | None:
    """The project directory holding ``start`` or a parent, as ``Project.find`` finds it."""
    here = start
    while True:
        if os.path.isfile(os.path.join(here, MANIFEST)):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def file_stamps(top: str) -> tuple[tuple[str, int, int, int], ...]:
    """(path under ``top``, inode, size, mtime) of every file under ``top``, sorted; byte
    code is left out (``__pycache__`` is written when plugins are imported)."""
    out = []
    base = len(top) + 1
    for directory, _, files in os.walk(top):
        for name in files:
            if name.endswith(".pyc"):
                continue
            path = os.path.join(directory, name)
            info = os.lstat(path)
            out.append((path[base:], info.st_ino, info.st_size, info.st_mtime_ns))
    out.sort()
    return tuple(out)


def snapshot(root: str) -> Snapshot:
    """What the project at ``root`` is now, as records are keyed."""
    manifest = _read(os.path.join(root, MANIFEST))
    if manifest is None:
        raise Doubt("no manifest")
    env: Any = False
    envdir = os.path.join(root, STATE, "env")
    try:
        names = os.listdir(envdir)
    except FileNotFoundError:
        env = None
    else:
        try:
            target = os.readlink(os.path.join(envdir, "current"))
        except OSError:
            target = None
        if target is not None and "current" in names:
            env = (target, file_stamps(os.path.join(envdir, target)))
    return (root, manifest, _read(os.path.join(root, LOCK)), env)


def _sources(directory: str | None) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime, size) of the Python sources in ``directory``: in a development
    checkout the installer's code changes without its version."""
    if directory is None:
        return ()
    try:
        with os.scandir(directory) as entries:
            found = [
                (e.name, (s := e.stat()).st_mtime_ns, s.st_size)
                for e in entries
                if e.name.endswith(".py")
            ]
    except OSError:
        return ()
    found.sort()
    return tuple(found)


def _builtin_dir() -> str | None:
    """The built-in source's folder, as ``_install._builtin.builtin_dir`` finds it."""
    explicit = os.environ.get("P2PHOST_BUILTIN_DIR")
    if explicit:
        return os.path.expanduser(explicit)
    inside = os.path.join(_HERE, "_builtin")
    return inside if os.path.isdir(inside) else None


def _listing(directory: str | None) -> tuple[tuple[str, int, int, int], ...] | None:
    if directory is None:
        return None
    try:
        with os.scandir(directory) as entries:
            found = [(e.name, (s := e.stat()).st_ino, s.st_size, s.st_mtime_ns) for e in entries]
    except OSError:
        return None
    found.sort()
    return tuple(found)


def host_stamp() -> tuple[Any, ...]:
    """This host as the installer's decisions depend on it (see the module's docstring)."""
    paths: list[tuple[str, Any]] = []
    sdk = None
    cwd = os.getcwd()
    for entry in sys.path:
        if entry in ("", cwd):  # ``python -m p2phost``: the project (or a folder in it)
            # Not its mtime, which each install changes, nor its name: what the installer
            # looks for on sys.path (distributions: the SDK's version; the packages) is in
            # its listing.
            names = os.listdir(cwd)
            paths.append(
                (
                    "",
                    sorted(
                        n
                        for n in names
                        if n.endswith(_DISTRIBUTIONS) or n in ("p2phost", "p2phost_sdk")
                    ),
                )
            )
            continue
        try:
            paths.append((entry, os.stat(entry).st_mtime_ns))
        except OSError:
            paths.append((entry, None))
        if sdk is None and os.path.isfile(os.path.join(entry or ".", "p2phost_sdk", "__init__.py")):
            sdk = os.path.join(entry or ".", "p2phost_sdk")
    return (
        sys.version,
        sys.executable,
        sys.prefix,
        __version__,
        tuple(paths),
        _sources(_HERE),
        _sources(os.path.join(_HERE, "_install")),
        _sources(os.path.join(_HERE, "_cli")),
        _sources(sdk),
        tuple(os.environ.get(name) for name in VARIABLES),
        _listing(_builtin_dir()),
    )


def key(snap: Snapshot, host: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a record of ``snap`` on ``host`` is keyed by. Not the project's place: a new
    project with the same manifest builds the same, and a project whose generation has
    the same files (the same links to the same unpacked wheels) has nothing to do alike."""
    _, manifest, lock, env = snap
    return (FORMAT, manifest, lock, env, host)


def record_path(cache: str, snap: Snapshot, host: tuple[Any, ...]) -> str:
    """Where the record for ``snap`` on ``host`` is kept, one per manifest, lock,
    generation and host (two venvs sharing a cache keep one each; a CRC only names the
    file: the record holds its whole key)."""
    _, manifest, lock, env = snap
    kind = "build" if env is None else "noop"
    named = manifest + b"\0" + (lock or b"") + b"\0" + repr((env, host)).encode()
    return os.path.join(cache, "replay", f"{kind}-{zlib.crc32(named):08x}-{len(named)}")
