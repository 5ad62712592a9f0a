"""The warm path of ``p2phost plugin install --yes``: do again what the installer last did.

A full install (``_install``) costs more in importing its modules (packaging, tomllib,
dataclasses, the resolver...) than in its work when everything is cached. So after each
successful ``plugin install --yes`` the full installer *records* what it decided
(:mod:`p2phost._install._record`), keyed by everything the decision depended on, and the
next ``plugin install --yes [--refresh]`` (no names, no other option; ``main.run`` calls
:func:`replay` before anything else) *replays* it when all of that is unchanged:

- the bytes of ``p2phost.toml`` and ``p2phost.lock`` (or that there is no lock);
- the plugin environment: absent (the recorded install built ``.p2phost/env`` from
  nothing, and the replay builds the same generation), or the same active generation with
  the same files, inode for inode (the recorded install found nothing to do);
- this host: Python, p2phost's version and sources, the SDK's sources, the mtimes of the
  ``sys.path`` directories (a package installed or removed), the built-in source's files,
  and the variables the installer reads (``P2PHOST_REGISTRY``...);
- every registry answer the decision used: the same kept file (inode, size, mtime) and
  still fresh by the freshness the registry gave it (RFC 9111, ``_revalidate``, whose rules
  the installer's response cache uses); a stale one is asked again only by the full
  installer. With ``--refresh`` each is asked again first, conditionally, and the record
  stands only if every one is Not Modified (the same answer);
- every unpacked wheel it links: each file's inode, size and mtime and each directory's
  mtime as recorded (as ``_install._unpacked`` checks a tree before linking it), and the
  cached wheel and signature files unchanged (their ctime too, which no one can set back).

Anything else, or any doubt (a file that cannot be read, a record of another format,
another command holding the project), and :func:`replay` does nothing and returns False:
the full installer runs. The replay never decides anything; it imports only ``os``,
``sys``, ``marshal`` and ``zlib`` (and ``fcntl`` to build), so it takes a few
milliseconds. ``P2PHOST_REPLAY=0`` turns it off.

Records live in ``CACHE/replay``: one file each, checked with a CRC, holding Python
``marshal`` data, written and read only when no one but their owner (this user) may write
them; the cache is otherwise trusted as much as the unpacked wheels linked from it.
"""

from __future__ import annotations

import marshal
import os
import sys
import time
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
FORMAT = 2
MANIFEST = "p2phost.toml"
LOCK = "p2phost.lock"
STATE = ".p2phost"
#: The variables the full installer reads that can change what it does.
VARIABLES = ("P2PHOST_REGISTRY", "P2PHOST_BUILTIN_DIR", "P2PHOST_TIMEOUT")
#: What makes a directory on sys.path hold distributions (importlib.metadata's view).
_DISTRIBUTIONS = (".dist-info", ".egg-info", ".pth")
#: With these, rich may treat a pipe as a terminal (``_cli._output``), and the full
#: installer's progress bar writes control codes there that a replay does not print.
_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE")
_MAGIC = b"p2phost-replay\n"
_HERE = os.path.dirname(os.path.abspath(__file__))


class _Doubt(Exception):
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
        raise _Doubt("no manifest")
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


def write_record(path: str, record: dict[str, Any]) -> None:
    """Keep ``record`` at ``path`` (atomically: a reader sees the old one or the new)."""
    data = marshal.dumps(record)
    part = f"{path}.{os.getpid()}.part"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        # Only its owner may write it, whatever the umask (_load trusts no other record).
        with open(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(_MAGIC + zlib.crc32(data).to_bytes(4, "big") + data)
        os.replace(part, path)
    finally:
        if os.path.lexists(part):
            os.unlink(part)


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            blob = handle.read()
    except FileNotFoundError:
        return None
    # A record is the replay's whole decision (what to link, the lock to write): one that
    # another user could have written, in a shared cache, is no decision of ours.
    if info.st_uid != os.getuid() or info.st_mode & 0o022 or not blob.startswith(_MAGIC):
        return None
    body = blob[len(_MAGIC) + 4 :]
    if zlib.crc32(body).to_bytes(4, "big") != blob[len(_MAGIC) : len(_MAGIC) + 4]:
        return None
    record = marshal.loads(body)
    return record if isinstance(record, dict) else None


def _fresh(answers: list[tuple[Any, ...]], now: float) -> bool:
    """Whether each kept answer is the recorded file and still fresh (RFC 9111 4.2)."""
    from ._revalidate import is_fresh

    for path, inode, size, mtime, received, max_age, age, *_ in answers:
        info = os.stat(path)
        if (info.st_ino, info.st_size, info.st_mtime_ns) != (inode, size, mtime):
            return False
        if not is_fresh(received, max_age, age, now):
            return False
    return True


def _same(path: str, stamp: tuple[int, ...] | None) -> None:
    """Doubt unless ``path`` is the file recorded (inode, size, mtime, ctime), or is
    absent as recorded."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if stamp is None:
            return
        raise _Doubt(path) from None
    if (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns) != stamp:
        raise _Doubt(path)


def _link_trees(trees: list[tuple[Any, ...]], staged: str) -> None:
    """Link every recorded file of every tree into ``staged``, in the installer's order
    (a later wheel's file replaces an earlier one's), checking each as recorded."""
    for wheel, wheel_stamp, signature, signature_stamp, tree, layout in trees:
        _same(wheel, wheel_stamp)
        _same(signature, signature_stamp)
        for relative, mtime, files in layout:
            source = os.path.join(tree, relative) if relative else tree
            if os.stat(source).st_mtime_ns != mtime:
                raise _Doubt(source)
            into = os.path.join(staged, relative) if relative else staged
            os.makedirs(into, exist_ok=True)
            for name, inode, size, file_mtime in files:
                path = os.path.join(source, name)
                info = os.stat(path)
                if (info.st_ino, info.st_size, info.st_mtime_ns) != (inode, size, file_mtime):
                    raise _Doubt(path)
                dest = os.path.join(into, name)
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.link(path, dest)


def _remove(top: str) -> None:
    """Remove the directory tree ``top`` that a replay made (no symlinks in it)."""
    for directory, dirs, files in os.walk(top, topdown=False):
        for name in files:
            os.unlink(os.path.join(directory, name))
        for name in dirs:
            os.rmdir(os.path.join(directory, name))
    os.rmdir(top)


def _build(record: dict[str, Any], snap: Snapshot) -> bool:
    """Build the recorded generation, switch to it and write the recorded lock, in the
    full installer's order and under its project lock; False (nothing changed) when the
    project changed meanwhile or another command holds it."""
    import fcntl

    root = snap[0]
    state = os.path.join(root, STATE)
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "install.lock"), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # the full installer waits for it
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        if snapshot(root) != snap:
            return False
        envdir = os.path.join(state, "env")
        os.mkdir(envdir)
        try:
            staged = os.path.join(envdir, record["generation"])
            os.mkdir(staged)
            _link_trees(record["trees"], staged)
        except BaseException:
            _remove(envdir)  # as the installer drops a generation it could not stage
            raise
        link = os.path.join(envdir, f".current-{os.getpid()}")
        os.symlink(record["generation"], link)
        os.replace(link, os.path.join(envdir, "current"))
        part = os.path.join(root, f".{LOCK}.{os.getpid()}.tmp")
        try:
            with open(part, "wb") as out:
                out.write(record["lock"])
            os.replace(part, os.path.join(root, LOCK))
        finally:
            if os.path.lexists(part):  # not written: the full installer writes it
                os.unlink(part)
    return True


def replay(refresh: bool = False) -> bool:
    """Do what the last full ``plugin install --yes`` recorded, when nothing it depended
    on has changed, and print what it printed; False, having changed nothing, when the
    full installer must run (see the module's docstring). With ``refresh``
    (``--refresh``), each answer the record rests on is asked for again first, and the
    record stands only if every one is Not Modified (``_revalidate``)."""
    if os.environ.get("P2PHOST_REPLAY") == "0" or any(v in os.environ for v in _FORCING):
        return False
    try:
        root = find_root(os.getcwd())
        if root is None:
            return False
        snap = snapshot(root)
        if snap[3] is False:
            return False
        host = host_stamp()
        path = record_path(cache_dir(), snap, host)
        record = _load(path)
        if record is None or record.get("key") != key(snap, host):
            return False
        if refresh:
            from ._revalidate import revalidate

            answers = revalidate(record["answers"])
            if answers is None:
                return False
            record["answers"] = answers
            write_record(path, record)  # fresh again: plain installs replay it too
        elif not _fresh(record["answers"], time.time()):
            return False
        if snap[3] is None and not _build(record, snap):
            return False
    except Exception:  # any doubt: the full installer decides
        return False
    for stream, text in record["output"]:
        out = sys.stderr if stream else sys.stdout
        out.write(text + "\n")
        out.flush()
    return True
