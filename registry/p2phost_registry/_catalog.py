"""The registry's reads: plugins, their versions and files, and the audit log, as records.

The :class:`~._store.Store` is a catalog too; what changes the data is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from p2phost_sdk import normalize_name

from ._db import Database, Tx
from ._distributions import distributions, plugin_of
from ._errors import NotFound
from ._identity import sort_key
from ._names import suggestions
from ._records import AuditEntry, FileRecord, PluginRecord, VersionRecord

#: The columns of a file row, as :func:`file_record` reads them.
FILE_COLUMNS = (
    "filename, plugin, version, packagetype, sha256, size, uploaded, "
    "core_metadata_sha256, has_signature, publisher_key"
)


class Catalog:
    """Reads of the registry's database (``db``) and files directory (``files_dir``)."""

    db: Database
    files_dir: Path

    def generation(self) -> int:
        """A number that changes whenever published data changes (for cache invalidation)."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT value FROM meta WHERE key = 'generation'")
        return int(row[0]) if row else 0

    def names(self) -> list[str]:
        """Every plugin's normalised name, sorted."""
        with self.db.transaction() as tx:
            return sorted(r[0] for r in tx.all("SELECT name FROM plugins"))

    def distributions(self) -> dict[str, str]:
        """Every plugin's distribution name (what /simple/ lists), by plugin name."""
        with self.db.transaction() as tx:
            return distributions(tx)

    def plugin_of_distribution(self, distribution: str) -> PluginRecord:
        """The plugin carried by ``distribution`` (a /simple/ project name)."""
        with self.db.transaction() as tx:
            name = plugin_of(tx, distribution)
            if name is None:
                raise self._not_found(tx, distribution)
            return self._load(tx, name)[0]

    def plugin(self, name: str) -> PluginRecord:
        """One plugin with its README texts; :class:`NotFound` suggests close names."""
        name = normalize_name(name)
        with self.db.transaction() as tx:
            plugins = self._load(tx, name)
            if not plugins:
                raise self._not_found(tx, name)
        return plugins[0]

    def plugins(self) -> list[PluginRecord]:
        """Every plugin, without README texts (for search and listings)."""
        with self.db.transaction() as tx:
            return self._load(tx, None)

    def file(self, filename: str) -> tuple[FileRecord, Path]:
        """A stored file's record and path."""
        with self.db.transaction() as tx:
            row = tx.one(f"SELECT {FILE_COLUMNS} FROM files WHERE filename = ?", (filename,))
        if row is None:
            raise NotFound(f"no file {filename}")
        record = file_record(row)
        return record, self.files_dir / record.plugin / record.filename

    def core_metadata(self, filename: str) -> str:
        """The METADATA of a stored wheel (PEP 658 sidecar)."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT core_metadata FROM files WHERE filename = ?", (filename,))
        if row is None or row[0] is None:
            raise NotFound(f"no metadata for {filename}")
        return str(row[0])

    def audit_log(self, name: str | None = None) -> list[AuditEntry]:
        """The audit log, oldest first, of one plugin or of all."""
        sql = "SELECT at, actor, action, plugin, version, detail FROM audit"
        params: tuple[str, ...] = ()
        if name is not None:
            sql, params = sql + " WHERE plugin = ?", (normalize_name(name),)
        with self.db.transaction() as tx:
            return [AuditEntry(*r) for r in tx.all(sql + " ORDER BY id", params)]

    def _not_found(self, tx: Tx, name: str) -> NotFound:
        close = suggestions(name, [r[0] for r in tx.all("SELECT name FROM plugins")])
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return NotFound(f"no plugin named {name!r} in this registry{hint}")

    def _load(self, tx: Tx, name: str | None) -> list[PluginRecord]:
        where, params = ("WHERE {col} = ?", (name,)) if name else ("", ())
        readme_cols = ", readme, readme_type" if name else ""
        plugin_rows = tx.all(
            "SELECT name, display_name, created, downloads FROM plugins "
            + where.format(col="name"), params,
        )
        owners: dict[str, list[str]] = {}
        for plugin, owner in tx.all(
            "SELECT plugin, owner FROM owners " + where.format(col="plugin") + " ORDER BY added",
            params,
        ):
            owners.setdefault(plugin, []).append(owner)
        files: dict[tuple[str, str], list[FileRecord]] = {}
        for row in tx.all(
            f"SELECT {FILE_COLUMNS} FROM files " + where.format(col="plugin")
            + " ORDER BY filename", params,
        ):
            record = file_record(row)
            files.setdefault((record.plugin, record.version), []).append(record)
        versions: dict[str, list[VersionRecord]] = {}
        for row in tx.all(
            "SELECT plugin, version, summary, metadata, yanked, yanked_reason, uploaded, "
            f"requires_python, downloads, license, urls{readme_cols} FROM versions "
            + where.format(col="plugin"), params,
        ):
            extra: dict[str, Any] = {"readme": row[11], "readme_type": row[12]} if name else {}
            versions.setdefault(row[0], []).append(VersionRecord(
                plugin=row[0], version=row[1], summary=row[2], metadata=json.loads(row[3]),
                yanked=bool(row[4]), yanked_reason=row[5], uploaded=row[6],
                requires_python=row[7], files=tuple(files.get((row[0], row[1]), ())),
                downloads=int(row[8]), license=row[9],
                urls=tuple((str(a), str(b)) for a, b in json.loads(row[10] or "[]")), **extra,
            ))
        return [
            PluginRecord(
                name=p, display_name=display, created=created, downloads=int(downloads),
                owners=tuple(owners.get(p, ())),
                versions=tuple(sorted(
                    versions.get(p, ()), key=lambda v: sort_key(v.version), reverse=True
                )),
            )
            for p, display, created, downloads in sorted(plugin_rows)
        ]


def _file(row: tuple[Any, ...]) -> FileRecord:
    return FileRecord(
        filename=row[0], plugin=row[1], version=row[2], packagetype=row[3], sha256=row[4],
        size=int(row[5]), uploaded=row[6], core_metadata_sha256=row[7],
        has_signature=bool(row[8]), publisher_key=row[9],
    )


def file_record(row: tuple[Any, ...]) -> FileRecord:
    """A file row (:data:`FILE_COLUMNS`) as a record."""
    return FileRecord(
        filename=row[0], plugin=row[1], version=row[2], packagetype=row[3], sha256=row[4],
        size=int(row[5]), uploaded=row[6], core_metadata_sha256=row[7],
        has_signature=bool(row[8]), publisher_key=row[9],
    )
