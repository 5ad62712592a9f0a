"""The store: the database plus a files directory, and every rule about changing them.

Publishing is crash-safe: the upload is written to ``tmp/`` and validated there; the rows
are inserted, the file is renamed into ``files/`` and only then is the transaction
committed. A crash before the commit leaves at most an orphan file that no row points at
(never served, removed at the next start); files are only ever served through their row.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from packaging.version import InvalidVersion

from p2phost_sdk import is_valid_name, normalize_name

from ._catalog import FILE_COLUMNS, Catalog
from ._claims import audit, claim_name, claim_version
from ._db import Database, Tx, now_iso
from ._distributions import check_distribution
from ._errors import BadRequest, Conflict, DuplicateKey, Forbidden, NotFound
from ._identity import backfill, canonical_version, sort_key
from ._records import Actor, PublishResult
from ._signatures import check_signature, hold_to_key, register_key
from ._tokens import (
    TokenInfo,
    authenticate,
    create_token,
    expiry_in,
    list_tokens,
    set_token_end,
)
from ._validate import Inspected, inspect_upload

#: Uploads larger than this are refused unless the store is opened with another limit.
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024


def is_store(data_dir: Path, database: str | None = None) -> bool:
    """Whether ``data_dir`` holds a registry's store: its ``files`` directory, and its
    SQLite database unless the metadata lives in ``database`` (what :class:`Store` makes)."""
    return (data_dir / "files").is_dir() and (
        database is not None or (data_dir / "registry.sqlite3").is_file())


class Store(Catalog):
    """The registry's store under ``data_dir`` (files) and ``database`` (default: SQLite there);
    its reads are the :class:`~._catalog.Catalog`'s."""

    def __init__(
        self,
        data_dir: Path,
        database: str | None = None,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        *,
        recover: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.tmp_dir = data_dir / "tmp"
        self.max_upload = max_upload
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(database, data_dir)
        backfill(self.db)
        if recover:
            self.recover()

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    # -- crash recovery --------------------------------------------------------------------

    def recover(self) -> None:
        """Drop what an interrupted upload left: its temp file and an uncommitted file.

        The server runs this at start, under a lock that waits for publishes in flight on
        other servers sharing the store (a file renamed into place, its row not yet committed).
        """
        for part in self.tmp_dir.glob("*.part"):
            pid = part.name.split("-", 1)[0]
            if not pid.isdigit() or not _alive(int(pid)) or int(pid) == os.getpid():
                part.unlink(missing_ok=True)
        with self.db.transaction() as tx:
            # Another server sharing the store may be between renaming a file into place
            # and committing its row: wait for it, and hold new publishes off meanwhile.
            tx.files_lock(exclusive=True)
            known = {r[0] for r in tx.all("SELECT filename FROM files")}
            signed = {r[0] for r in tx.all("SELECT filename FROM files WHERE has_signature = 1")}
            for path in self.files_dir.glob("*/*"):
                name = path.name
                keep = name in known or (name.endswith(".sig") and name[:-4] in signed)
                if not keep:
                    path.unlink(missing_ok=True)

    def new_upload_path(self) -> Path:
        """A fresh temp path for an incoming upload (removed at start if the process died)."""
        return self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.part"

    # -- tokens ----------------------------------------------------------------------------

    def create_token(
        self, owner: str, scopes: list[str] | tuple[str, ...] = (),
        expires_in_days: float | None = None,
    ) -> str:
        """Create a publishing token for ``owner`` limited to ``scopes``; returns the secret."""
        return create_token(self.db, owner, scopes, expiry_in(expires_in_days))

    def authenticate(self, token: str | None) -> Actor:
        """The actor a token stands for; :class:`Unauthorized` when missing, unknown or dead."""
        return authenticate(self.db, token)

    def tokens(self, owner: str | None = None) -> list[TokenInfo]:
        """Every token (of ``owner``), oldest first, without secrets."""
        return list_tokens(self.db, owner)

    def revoke_token(self, prefix: str, owner: str | None = None) -> TokenInfo:
        """Revoke a token by its prefix (only ``owner``'s when given)."""
        return set_token_end(self.db, prefix, revoke=True, owner=owner)

    def expire_token(self, prefix: str, days: float, owner: str | None = None) -> TokenInfo:
        """Make a token expire ``days`` from now (0: now)."""
        return set_token_end(self.db, prefix, expires=expiry_in(days), owner=owner)

    # -- writes ----------------------------------------------------------------------------

    def publish(
        self,
        actor: Actor,
        upload: Path,
        filename: str,
        *,
        signature: bytes | None = None,
        expected_sha256: str | None = None,
    ) -> PublishResult:
        """Validate and store one uploaded file; ``upload`` is consumed either way."""
        try:
            info = inspect_upload(upload, filename, self.max_upload)
            if expected_sha256 and expected_sha256.strip().lower() != info.sha256:
                raise BadRequest(
                    f"{filename}: sha256_digest {expected_sha256} does not match the file "
                    f"({info.sha256}); the upload was corrupted, retry it"
                )
            if not actor.may_touch(info.name):
                raise Forbidden(
                    f"the token of {actor.owner} is limited to {', '.join(actor.scopes)} and "
                    f"may not publish {info.name}; create a token with --scope {info.name}"
                )
            signed_by = check_signature(signature, info)
            return self._commit_upload(actor, info, upload, signature,
                                       signed_by.publisher_key if signed_by else None)
        finally:
            upload.unlink(missing_ok=True)

    def _commit_upload(
        self, actor: Actor, info: Inspected, upload: Path, signature: bytes | None,
        publisher_key: str | None,
    ) -> PublishResult:
        final = self.files_dir / info.name / info.filename
        sig_final = final.with_name(final.name + ".sig")
        moved = signed = False
        try:
            with self.db.transaction() as tx:
                tx.files_lock(exclusive=False)
                created = claim_name(tx, actor, info)
                check_distribution(tx, info.name, info.filename)
                if publisher_key is not None and hold_to_key(tx, actor.owner, publisher_key):
                    audit(tx, actor.owner, "publisher-key", info.name, info.version,
                           f"first publisher key of {actor.owner}: {publisher_key}")
                clash = tx.one(
                    "SELECT filename FROM files WHERE lower(filename) = lower(?)", (info.filename,)
                )
                if clash:
                    raise Conflict(
                        f"{info.filename} already exists; published files are immutable: "
                        "bump the version and publish again"
                    )
                now = now_iso()
                claim_version(tx, actor, info, now)
                core_sha = (
                    hashlib.sha256(info.core_metadata.encode()).hexdigest()
                    if info.core_metadata is not None else None
                )
                same_kind = tx.one("SELECT filename FROM files WHERE plugin = ? AND dist_key = ?",
                                   (info.name, info.dist_key))
                if same_kind:
                    raise Conflict(
                        f"{info.filename}: {same_kind[0]} is already the "
                        f"{'sdist' if info.packagetype == 'sdist' else 'wheel for these tags'}"
                        f" of {info.name} {info.version}; published files are immutable: "
                        "bump the version"
                    )
                tx.run(
                    f"INSERT INTO files ({FILE_COLUMNS}, core_metadata, dist_key) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (info.filename, info.name, info.version, info.packagetype, info.sha256,
                     info.size, now, core_sha, int(signature is not None), publisher_key,
                     info.core_metadata, info.dist_key),
                )
                audit(tx, actor.owner, "publish", info.name, info.version, info.filename)
                final.parent.mkdir(parents=True, exist_ok=True)
                if signature is not None:
                    sig_tmp = self.new_upload_path()
                    sig_tmp.write_bytes(signature)
                    os.replace(sig_tmp, sig_final)
                    signed = True
                _fsync(upload)
                os.replace(upload, final)
                moved = True
                _fsync(final.parent)
        except DuplicateKey as exc:
            raise Conflict(
                f"{info.filename}: another upload of {info.name} {info.version} won the race; "
                "published files are immutable: bump the version"
            ) from exc
        except BaseException:
            if moved:
                final.unlink(missing_ok=True)
            if signed:  # never the signature of the file that already exists
                sig_final.unlink(missing_ok=True)
            raise
        return PublishResult(info.name, info.version, info.filename, created)

    def _require_owner(self, tx: Tx, actor: Actor, name: str) -> None:
        owners = [r[0] for r in tx.all("SELECT owner FROM owners WHERE plugin = ?", (name,))]
        if not owners:
            raise self._not_found(tx, name)
        if actor.owner not in owners or not actor.may_touch(name):
            raise Forbidden(
                f"{actor.owner}'s token may not change {name} "
                f"(owners: {', '.join(sorted(owners))}); use a token of an owner scoped to it"
            )

    def set_yanked(self, actor: Actor, name: str, version: str, reason: str, yanked: bool) -> str:
        """Yank (or un-yank) every file of a version (any PEP 440 spelling); its stored one."""
        name = normalize_name(name)
        with self.db.transaction() as tx:
            self._require_owner(tx, actor, name)
            stored = self._version_row(tx, name, version)
            tx.run(
                "UPDATE versions SET yanked = ?, yanked_reason = ? "
                "WHERE plugin = ? AND version = ?",
                (int(yanked), reason if yanked else None, name, stored),
            )
            audit(tx, actor.owner, "yank" if yanked else "unyank", name, stored, reason)
        return stored

    def _version_row(self, tx: Tx, name: str, version: str) -> str:
        """The stored spelling of the version PEP 440-equal to ``version``."""
        try:
            canonical = canonical_version(version)
        except InvalidVersion as exc:
            raise BadRequest(f"{version!r} is not a PEP 440 version such as 1.0.0") from exc
        row = tx.one("SELECT version FROM versions WHERE plugin = ? AND canonical = ?",
                     (name, canonical))
        if row is None:
            known = [r[0] for r in tx.all("SELECT version FROM versions WHERE plugin = ?",
                                          (name,))]
            known.sort(key=sort_key, reverse=True)
            raise NotFound(f"{name} has no version {version} (versions: "
                           f"{', '.join(known) or 'none'})")
        return str(row[0])

    def add_owner(self, actor: Actor, name: str, owner: str) -> None:
        """An owner of ``name`` adds ``owner``."""
        name = normalize_name(name)
        if not is_valid_name(owner):
            raise BadRequest(f"owner {owner!r}: use letters, digits, '-', '_' and '.'")
        with self.db.transaction() as tx:
            self._require_owner(tx, actor, name)
            if tx.one("SELECT 1 FROM owners WHERE plugin = ? AND owner = ?", (name, owner)):
                raise Conflict(f"{owner} already owns {name}")
            tx.run(
                "INSERT INTO owners (plugin, owner, added) VALUES (?, ?, ?)",
                (name, owner, now_iso()),
            )
            audit(tx, actor.owner, "add-owner", name, None, owner)

    def remove_owner(self, actor: Actor, name: str, owner: str) -> tuple[str, ...]:
        """An owner of ``name`` removes ``owner`` (never the last one); the owners left."""
        name = normalize_name(name)
        with self.db.transaction() as tx:
            self._require_owner(tx, actor, name)
            owners = [r[0] for r in tx.all("SELECT owner FROM owners WHERE plugin = ? "
                                           "ORDER BY added", (name,))]
            if owner not in owners:
                raise NotFound(f"{owner} does not own {name} (owners: {', '.join(owners)})")
            if len(owners) == 1:
                raise Conflict(f"{owner} is the last owner of {name}; add another owner "
                               "first, then remove this one")
            tx.run("DELETE FROM owners WHERE plugin = ? AND owner = ?", (name, owner))
            audit(tx, actor.owner, "remove-owner", name, None, owner)
        return tuple(o for o in owners if o != owner)

    def register_publisher_key(self, actor: Actor, key: str, proof: bytes) -> str | None:
        """Make ``key`` the actor's publisher key (needs an unscoped token); the previous one."""
        if actor.scopes:
            raise Forbidden(
                f"registering a publisher key changes it for every plugin of {actor.owner}, so "
                f"it needs a token without --scope: p2phost registry token create --owner "
                f"{actor.owner}")
        with self.db.transaction() as tx:
            previous = register_key(tx, actor.owner, key, proof)
            if previous != key:
                owned = [r[0] for r in tx.all("SELECT plugin FROM owners WHERE owner = ?",
                                              (actor.owner,))]
                for plugin in owned:
                    audit(tx, actor.owner, "publisher-key", plugin, None,
                           f"publisher key of {actor.owner}: {previous or 'none'} -> {key}")
        return previous

    def add_downloads(self, counts: dict[tuple[str, str], int]) -> None:
        """Add counted downloads per (plugin, version) in one transaction.

        Counts do not bump the generation: they never invalidate cached pages.
        """
        if not counts:
            return
        with self.db.transaction() as tx:
            per_plugin: dict[str, int] = {}
            for (plugin, version), n in sorted(counts.items()):
                tx.run("UPDATE versions SET downloads = downloads + ? "
                       "WHERE plugin = ? AND version = ?", (n, plugin, version))
                per_plugin[plugin] = per_plugin.get(plugin, 0) + n
            for plugin, n in sorted(per_plugin.items()):
                tx.run("UPDATE plugins SET downloads = downloads + ? WHERE name = ?", (n, plugin))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
