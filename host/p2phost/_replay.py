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
``sys``, ``marshal`` and ``zlib`` (and ``fcntl`` to build, through :mod:`p2phost._fileops`,
the file operations it shares with the installer), so it takes a few milliseconds.
``P2PHOST_REPLAY=0`` turns it off (and the recording). What a record is keyed by is
:mod:`p2phost._replay_key`'s; building its generation, :mod:`p2phost._fileops`'s.

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

from ._replay_key import cache_dir, find_root, host_stamp, key, record_path, snapshot

# Not typing.TYPE_CHECKING: importing typing costs more than a replay.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: With these, rich may treat a pipe as a terminal (``_cli._output``), and the full
#: installer's progress bar writes control codes there that a replay does not print.
_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE")
_MAGIC = b"p2phost-replay\n"


def enabled() -> bool:
    """Whether replaying is on (``P2PHOST_REPLAY=0`` turns it off, and recording with it)."""
    return os.environ.get("P2PHOST_REPLAY") != "0"


def write_record(path: str, record: dict[str, Any]) -> None:
    """Keep ``record`` at ``path`` (atomically: a reader sees the old one or the new)."""
    from ._fileops import replace_file  # not for a plain replay: it writes nothing

    data = marshal.dumps(record)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Only its owner may write it, whatever the umask (_load trusts no other record).
    replace_file(path, _MAGIC + zlib.crc32(data).to_bytes(4, "big") + data, 0o600)


#: A record names trees and a lock: kilobytes. Anything larger is no record of ours.
_MAX_RECORD = 4 << 20


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            blob = handle.read(_MAX_RECORD + 1)
    except FileNotFoundError:
        return None
    # A record is the replay's whole decision (what to link, the lock to write): one that
    # another user could have written, in a shared cache, is no decision of ours.
    if info.st_uid != os.getuid() or info.st_mode & 0o022 or not blob.startswith(_MAGIC) \
            or len(blob) > _MAX_RECORD:
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


def replay(refresh: bool = False) -> bool:
    """Do what the last full ``plugin install --yes`` recorded, when nothing it depended
    on has changed, and print what it printed; False, having changed nothing, when the
    full installer must run (see the module's docstring). With ``refresh``
    (``--refresh``), each answer the record rests on is asked for again first, and the
    record stands only if every one is Not Modified (``_revalidate``)."""
    if not enabled() or any(v in os.environ for v in _FORCING):
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
            if not record["answers"]:
                # A record that asked no registry (a kept lock, or a registry that was
                # down): --refresh must ask the configured ones, which the installer knows.
                return False
            from ._revalidate import revalidate

            answers = revalidate(record["answers"])
            if answers is None:
                return False
            record["answers"] = answers
            write_record(path, record)  # fresh again: plain installs replay it too
        elif not _fresh(record["answers"], time.time()):
            return False
        if snap[3] is None:  # only a build links files (a no-op replay imports no more)
            from ._fileops import build_recorded

            if not build_recorded(record, snap):
                return False
    except Exception:  # any doubt: the full installer decides
        return False
    for stream, text in record["output"]:
        out = sys.stderr if stream else sys.stdout
        out.write(text + "\n")
        out.flush()
    return True
