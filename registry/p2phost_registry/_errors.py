"""Errors the registry raises on purpose: each maps to one HTTP status and an actionable
message. Every exception of the registry is here (the package exports all but those
marked "internal")::

    Exception
    └── DuplicateKey                         (internal) an INSERT hit a unique constraint:
                                             another writer got there first
    p2phost_sdk.P2PHostError
    └── RegistryError                   400  base; ``status`` is the HTTP status answered
        ├── BadRequest                  400  malformed request or upload; nothing stored
        ├── Unauthorized                401  no token, or one the registry does not know
        ├── Forbidden                   403  a valid token that may not do this
        ├── NotFound                    404  no such plugin, version or file
        ├── NotAcceptable               406  (internal) no Accept type the index serves
        ├── Conflict                    409  a file that exists, a name too close to another
        ├── PayloadTooLarge             413  an upload over the registry's limit
        ├── PublisherKeyMismatch        422  (internal) signed with another key than the
        │                                    owner's registered publisher key
        └── StoreError                  500  the store cannot be opened or migrated
            └── ListenFailed                 ``serve`` cannot listen on its host and port
"""

from __future__ import annotations

from p2phost_sdk import P2PHostError


class DuplicateKey(Exception):
    """An INSERT hit a primary key or unique constraint (another writer got there first)."""


class RegistryError(P2PHostError):
    """Base of the registry's errors; ``status`` is the HTTP status the API answers with."""

    status = 400


class BadRequest(RegistryError):
    """The request is malformed or an upload failed validation; nothing was stored."""

    status = 400


class Unauthorized(RegistryError):
    """No token, or a token the registry does not know."""

    status = 401


class Forbidden(RegistryError):
    """A valid token that may not do this (another owner's plugin, out of scope)."""

    status = 403


class NotFound(RegistryError):
    """No such plugin, version or file."""

    status = 404


class NotAcceptable(RegistryError):
    """The client accepts none of the simple API's content types."""

    status = 406


class Conflict(RegistryError):
    """The change would break an invariant: a file that exists, a name too close to another."""

    status = 409


class PayloadTooLarge(RegistryError):
    """An upload is larger than the registry accepts."""

    status = 413


class PublisherKeyMismatch(RegistryError):
    """A signed upload uses another key than its owner's registered publisher key."""

    status = 422


class StoreError(RegistryError):
    """The store cannot be opened or migrated (bad URL, newer schema, unreachable database)."""

    status = 500


class ListenFailed(StoreError):
    """``serve`` cannot listen on its host and port (in use, not an address of this host)."""
