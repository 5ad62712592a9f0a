"""Errors the registry raises on purpose: each maps to one HTTP status and an actionable message."""

from __future__ import annotations

from p2phost_sdk import P2PHostError


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


class Conflict(RegistryError):
    """The change would break an invariant: a file that exists, a name too close to another."""

    status = 409


class PayloadTooLarge(RegistryError):
    """An upload is larger than the registry accepts."""

    status = 413


class StoreError(RegistryError):
    """The store cannot be opened or migrated (bad URL, newer schema, unreachable database)."""

    status = 500
