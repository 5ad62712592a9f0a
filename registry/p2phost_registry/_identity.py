"""The PEP 440 identity of versions and files: what makes two spellings one release.

``0.1``, ``0.1.0`` and ``0.01`` are one version (their canonical form is stored beside the
spelling, under a unique index); one sdist per version and one wheel per version, build tag
and tag set (``py2.py3`` and ``py3.py2`` are one wheel).
"""

from __future__ import annotations

from packaging.utils import canonicalize_version, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ._db import Database


def canonical_version(version: str) -> str:
    """The PEP 440 identity of a version: ``0.1``, ``0.1.0`` and ``0.01`` give one string."""
    return str(canonicalize_version(Version(version), strip_trailing_zero=True))


def dist_key_of(filename: str) -> str:
    """The kind of file a wheel or sdist is within its plugin: one file per kind.

    ``VERSION|sdist``, or ``VERSION|wheel|BUILD|TAGS`` with the canonical version and the
    sorted tag set. Raises ValueError (packaging's Invalid*Filename) for other names.
    """
    if filename.endswith(".whl"):
        _, version, build, tags = parse_wheel_filename(filename)
        tag_key = ".".join(sorted(str(t) for t in tags))
        return f"{canonicalize_version(version)}|wheel|{''.join(map(str, build))}|{tag_key}"
    _, version = parse_sdist_filename(filename)
    return f"{canonicalize_version(version)}|sdist"


def sort_key(version: str) -> tuple[int, Version | str]:
    """Orders versions by PEP 440 (an invalid legacy string sorts below every valid one)."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def backfill(db: Database) -> None:
    """Give rows stored before schema 4 their PEP 440 identity (once, in one transaction).

    Of old PEP 440 twins (``0.1`` and ``0.1.0`` stored apart) the first keeps the
    identity; the others stay readable but no new file can join them.
    """
    with db.transaction() as tx:
        versions = tx.all("SELECT plugin, version FROM versions WHERE canonical IS NULL "
                          "ORDER BY plugin, uploaded")
        files = tx.all("SELECT plugin, filename FROM files WHERE dist_key IS NULL")
        if not versions and not files:
            return
        taken = {(r[0], r[1]) for r in tx.all(
            "SELECT plugin, canonical FROM versions WHERE canonical IS NOT NULL")}
        for plugin, version in versions:  # the first stored of twins keeps the identity
            try:
                key = (plugin, canonical_version(version))
            except InvalidVersion:
                continue
            if key not in taken:
                taken.add(key)
                tx.run("UPDATE versions SET canonical = ? WHERE plugin = ? AND version = ?",
                       (key[1], plugin, version))
        kinds = {(r[0], r[1]) for r in tx.all(
            "SELECT plugin, dist_key FROM files WHERE dist_key IS NOT NULL")}
        for plugin, filename in sorted(files):
            try:
                key = (plugin, dist_key_of(filename))
            except ValueError:
                continue
            if key not in kinds:
                kinds.add(key)
                tx.run("UPDATE files SET dist_key = ? WHERE filename = ?",
                       (key[1], filename))
