"""The rules a registry write checks and records inside its transaction.

Claiming a plugin name (its owners, or a new name not too close to another owner's),
claiming a version (one PEP 440 spelling per version), and the audit row every change
writes (which also bumps the generation, so other processes drop their caches).
"""

from __future__ import annotations

import json

from ._db import Tx, bump_generation, now_iso
from ._errors import Conflict, Forbidden
from ._identity import canonical_version
from ._names import too_close
from ._records import Actor
from ._validate import Inspected


def claim_name(tx: Tx, actor: Actor, info: Inspected) -> bool:
    """Check the actor may publish ``info.name``; register the name if it is new."""
    owners = [r[0] for r in tx.all("SELECT owner FROM owners WHERE plugin = ?", (info.name,))]
    if owners:
        if actor.owner not in owners:
            raise Forbidden(
                f"{info.name} is owned by {', '.join(sorted(owners))}, not {actor.owner}; "
                "ask an owner to add you (POST /api/v1/plugins/NAME/owners)"
            )
        return False
    others = [
        r[0] for r in tx.all(
            "SELECT name FROM plugins p WHERE NOT EXISTS "
            "(SELECT 1 FROM owners o WHERE o.plugin = p.name AND o.owner = ?)",
            (actor.owner,),
        )
    ]
    close = too_close(info.name, others)
    if close is not None:
        raise Conflict(
            f"the name {info.display_name!r} is too close to the existing plugin "
            f"{close!r} of another owner and could be mistaken for it; choose a clearly "
            "different name"
        )
    now = now_iso()
    tx.run(
        "INSERT INTO plugins (name, display_name, created) VALUES (?, ?, ?)",
        (info.name, info.display_name, now),
    )
    tx.run(
        "INSERT INTO owners (plugin, owner, added) VALUES (?, ?, ?)",
        (info.name, actor.owner, now),
    )
    audit(tx, actor.owner, "create", info.name, None, f"first publisher {actor.owner}")
    return True


def claim_version(tx: Tx, actor: Actor, info: Inspected, now: str) -> None:
    """Add the version row, or check the upload spells an existing version the same way."""
    canonical = canonical_version(info.version)
    row = tx.one("SELECT version FROM versions WHERE plugin = ? AND canonical = ?",
                 (info.name, canonical))
    if row is None:
        # Two uploads of one new version (a wheel and an sdist, or two servers) race
        # here: the loser's insert does nothing and it joins the winner's row.
        tx.run(
            "INSERT INTO versions (plugin, version, summary, metadata, readme, "
            "readme_type, requires_python, uploaded, uploader, canonical, license, urls) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (info.name, info.version, info.metadata.summary,
             json.dumps(info.metadata.to_table()), info.readme, info.readme_type,
             info.requires_python, now, actor.owner, canonical, info.license,
             json.dumps([list(u) for u in info.urls])),
        )
        row = tx.one("SELECT version FROM versions WHERE plugin = ? AND canonical = ?",
                     (info.name, canonical))
    if row is None or row[0] != info.version:
        existing = row[0] if row else "?"
        raise Conflict(
            f"{info.filename}: version {info.version} is the same PEP 440 version as the "
            f"published {info.name} {existing}; upload files named {existing}, or bump "
            "the version"
        )


def audit(tx: Tx, actor: str, action: str, plugin: str, version: str | None, detail: str) -> None:
    """Record one change in the audit log and tell other processes to drop their caches."""
    tx.run(
        "INSERT INTO audit (at, actor, action, plugin, version, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (now_iso(), actor, action, plugin, version, detail),
    )
    # Every audited change changes what readers see: other processes drop their caches.
    bump_generation(tx)
