"""Addresses as they may be shown: the password of a URL's userinfo removed.

Broker and database URLs carry credentials (``amqp://guest:guest@host/``). docs/transports.md
promises passwords are never printed or announced, so everything the CLI prints passes
through :func:`redact`: ``amqp://guest:guest@host/`` reads ``amqp://guest@host/``, as the
transports' own public form of an address does.
"""

from __future__ import annotations

import re

#: ``scheme://user:password@``: the password ends at the ``@`` (RFC 3986 forbids a bare
#: ``@`` or ``/`` in it) and never crosses whitespace or a quote, so running text is safe.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s'\"]*)"
                       r":[^@/\s'\"]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it removed."""
    if "://" not in text:
        return text  # the common case: no regular expression at all
    # No user left (``redis://:secret@host``): no ``@`` either, as the transports write it.
    return _USERINFO.sub(lambda m: m["scheme"] + (f"{m['user']}@" if m["user"] else ""), text)
