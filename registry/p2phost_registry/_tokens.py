"""Publishing tokens: created, listed, expired and revoked by an operator or their owner.

Only a hash of each token is stored; the first 12 characters (``p2ph_`` and 7 random ones)
name a token in lists and commands without revealing it. Every check reads the database,
so a token revoked on one server is refused by every other server at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from p2phost_sdk import is_valid_name, normalize_name

from ._db import Database, bump_generation, now_iso
from ._errors import BadRequest, Forbidden, NotFound, Unauthorized
from ._records import Actor

TOKEN_PREFIX = "p2ph_"
PREFIX_LENGTH = 12
_CREATE = "create one with `p2phost registry token create --owner NAME`"


@dataclass(frozen=True)
class TokenInfo:
    """A token as lists show it: never the secret, only its prefix."""

    prefix: str
    owner: str
    scopes: tuple[str, ...]
    created: str
    expires: str | None
    revoked: str | None
    last_used: str | None

    @property
    def state(self) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked:
            return "revoked"
        if self.expires and self.expires <= now_iso():
            return "expired"
        return "active"


def token_hash(token: str) -> str:
    """The stored form of a token."""
    # Tokens carry 256 random bits, so a plain hash is enough: no dictionary to attack.
    return hashlib.sha256(token.encode()).hexdigest()


def expiry_in(days: float | None) -> str | None:
    """The ISO time ``days`` from now (None: never)."""
    if days is None:
        return None
    if days < 0:
        raise BadRequest(f"--expires-in {days}: give a number of days >= 0")
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def create_token(
    db: Database, owner: str, scopes: list[str] | tuple[str, ...] = (),
    expires: str | None = None,
) -> str:
    """Create a token for ``owner`` limited to ``scopes``; returns the secret."""
    if not is_valid_name(owner):
        raise BadRequest(f"owner {owner!r}: use letters, digits, '-', '_' and '.'")
    for scope in scopes:
        if not is_valid_name(scope):
            raise BadRequest(f"scope {scope!r} is not a valid plugin name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    normal = sorted({normalize_name(s) for s in scopes})
    with db.transaction() as tx:
        tx.run(
            "INSERT INTO tokens (token_hash, prefix, owner, scopes, created, expires) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash(token), token[:PREFIX_LENGTH], owner, json.dumps(normal), now_iso(),
             expires),
        )
    return token


def authenticate(db: Database, token: str | None) -> Actor:
    """The actor a token stands for; :class:`Unauthorized` when missing, unknown or dead."""
    if not token:
        raise Unauthorized(
            "no token: send `Authorization: Bearer TOKEN` (or basic auth __token__:TOKEN); "
            + _CREATE)
    with db.transaction() as tx:
        row = tx.one(
            "SELECT owner, scopes, expires, revoked, prefix FROM tokens WHERE token_hash = ?",
            (token_hash(token),),
        )
        if row is not None and not row[3]:
            tx.run("UPDATE tokens SET last_used = ? WHERE token_hash = ?",
                   (now_iso(), token_hash(token)))
    if row is None:
        raise Unauthorized(f"the token is not valid for this registry; {_CREATE}")
    owner, scopes, expires, revoked, prefix = row
    if revoked:
        raise Unauthorized(f"the token {prefix}... of {owner} was revoked on {revoked[:10]}; "
                           + _CREATE)
    if expires and expires <= now_iso():
        raise Unauthorized(f"the token {prefix}... of {owner} expired on {expires[:10]}; "
                           + _CREATE)
    return Actor(owner=owner, scopes=tuple(json.loads(scopes)))


def list_tokens(db: Database, owner: str | None = None) -> list[TokenInfo]:
    """Every token (of ``owner``), oldest first."""
    sql = ("SELECT prefix, owner, scopes, created, expires, revoked, last_used FROM tokens"
           + (" WHERE owner = ?" if owner else "") + " ORDER BY created")
    with db.transaction() as tx:
        rows = tx.all(sql, (owner,) if owner else ())
    return [TokenInfo(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5], r[6])
            for r in rows]


def _one(db_rows: list[tuple[str, str]], prefix: str, owner: str | None) -> str:
    if not db_rows:
        who = f" of {owner}" if owner else ""
        raise NotFound(f"no token{who} starts with {prefix!r}; list them with "
                       "`p2phost registry token list`")
    if len(db_rows) > 1:
        raise BadRequest(f"{len(db_rows)} tokens start with {prefix!r}; give more of it")
    return db_rows[0][0]


def set_token_end(
    db: Database, prefix: str, *, revoke: bool = False, expires: str | None = None,
    owner: str | None = None,
) -> TokenInfo:
    """Revoke the token named by ``prefix``, or set when it expires (of ``owner`` only)."""
    if len(prefix) < 8:
        raise BadRequest(f"{prefix!r}: give at least the first 8 characters of the token "
                         "(as `p2phost registry token list` shows them)")
    column, value = ("revoked", now_iso()) if revoke else ("expires", expires)
    with db.transaction() as tx:
        rows = tx.all("SELECT token_hash, owner FROM tokens WHERE prefix = ? OR prefix LIKE ?",
                      (prefix[:PREFIX_LENGTH], prefix[:PREFIX_LENGTH] + "%"))
        mine = [(h, o) for h, o in rows if owner is None or o == owner]
        if rows and not mine:
            raise Forbidden(f"the token {prefix} belongs to another owner than {owner}")
        chosen = _one(mine, prefix, owner)
        tx.run(f"UPDATE tokens SET {column} = ? WHERE token_hash = ?", (value, chosen))
        row = tx.one("SELECT prefix, owner, scopes, created, expires, revoked, last_used "
                     "FROM tokens WHERE token_hash = ?", (chosen,))
        bump_generation(tx)
    assert row is not None
    return TokenInfo(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4], row[5], row[6])
