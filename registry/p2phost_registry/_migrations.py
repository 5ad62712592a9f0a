"""Versioned schema migrations, applied in order and recorded in ``schema_migrations``.

Each migration is plain SQL that both SQLite and PostgreSQL accept; ``{serial}`` stands for
the dialect's auto-increment primary key. Never edit a released migration: add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One step of the schema: its number, what it does and its statements."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "plugins, owners, versions, files, tokens",
        (
            """CREATE TABLE plugins (
                name TEXT PRIMARY KEY,
                display_name TEXT NOT NULL,
                created TEXT NOT NULL,
                downloads BIGINT NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE owners (
                plugin TEXT NOT NULL REFERENCES plugins(name),
                owner TEXT NOT NULL,
                added TEXT NOT NULL,
                PRIMARY KEY (plugin, owner)
            )""",
            """CREATE TABLE versions (
                plugin TEXT NOT NULL REFERENCES plugins(name),
                version TEXT NOT NULL,
                summary TEXT NOT NULL,
                metadata TEXT NOT NULL,
                readme TEXT NOT NULL,
                readme_type TEXT NOT NULL,
                requires_python TEXT,
                yanked INTEGER NOT NULL DEFAULT 0,
                yanked_reason TEXT,
                uploaded TEXT NOT NULL,
                uploader TEXT NOT NULL,
                PRIMARY KEY (plugin, version)
            )""",
            """CREATE TABLE files (
                filename TEXT PRIMARY KEY,
                plugin TEXT NOT NULL,
                version TEXT NOT NULL,
                packagetype TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                size BIGINT NOT NULL,
                uploaded TEXT NOT NULL,
                core_metadata TEXT,
                core_metadata_sha256 TEXT,
                has_signature INTEGER NOT NULL DEFAULT 0,
                FOREIGN KEY (plugin, version) REFERENCES versions(plugin, version)
            )""",
            "CREATE INDEX files_by_plugin ON files (plugin)",
            """CREATE TABLE tokens (
                token_hash TEXT PRIMARY KEY,
                prefix TEXT NOT NULL,
                owner TEXT NOT NULL,
                scopes TEXT NOT NULL,
                created TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "audit log and change generation",
        (
            """CREATE TABLE audit (
                id {serial},
                at TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                plugin TEXT NOT NULL,
                version TEXT,
                detail TEXT NOT NULL
            )""",
            "CREATE INDEX audit_by_plugin ON audit (plugin)",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "INSERT INTO meta (key, value) VALUES ('generation', '0')",
        ),
    ),
    Migration(
        3,
        "publisher keys: each owner's current key, and the key that signed each file",
        (
            "ALTER TABLE files ADD COLUMN publisher_key TEXT",
            # One row per owner: the current key; earlier keys are in the audit log.
            """CREATE TABLE publisher_keys (
                owner TEXT PRIMARY KEY,
                publisher_key TEXT NOT NULL,
                added TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "PEP 440 identity of versions and files, per-version downloads, links, token expiry",
        (
            # canonical: packaging's canonicalize_version, so 0.1 and 0.1.0 are one version;
            # rows from before are filled in by the store at start (see Store._backfill).
            "ALTER TABLE versions ADD COLUMN canonical TEXT",
            "CREATE UNIQUE INDEX versions_canonical ON versions (plugin, canonical)",
            "ALTER TABLE versions ADD COLUMN downloads BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE versions ADD COLUMN license TEXT",
            "ALTER TABLE versions ADD COLUMN urls TEXT",
            # dist_key: one sdist per version, one wheel per version, build and tags.
            "ALTER TABLE files ADD COLUMN dist_key TEXT",
            "CREATE UNIQUE INDEX files_dist_key ON files (plugin, dist_key)",
            "ALTER TABLE tokens ADD COLUMN expires TEXT",
            "ALTER TABLE tokens ADD COLUMN revoked TEXT",
            "ALTER TABLE tokens ADD COLUMN last_used TEXT",
            "CREATE INDEX tokens_by_prefix ON tokens (prefix)",
        ),
    ),
)

#: The schema version this code reads and writes.
SCHEMA_VERSION = MIGRATIONS[-1].version
