"""Helpers for discovery plugins: checking what the network announces, forgetting the silent.

Whatever arrives from a LAN or a broker may be malformed or hostile. Discovery plugins turn
it into a :class:`PeerRecord` only through :func:`check_announcement`, which bounds sizes,
checks the peer id and fills in wildcard hosts; a :class:`PresenceTable` remembers when each
peer was last heard so a plugin can report the ones that went silent.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ._discovery import PeerRecord
from ._errors import AnnouncementError, ConfigError
from ._peer_ids import is_peer_id

#: Most addresses one announcement may carry.
MAX_ADDRESSES = 16
#: Longest address (bytes of UTF-8) one announcement may carry.
MAX_ADDRESS_LENGTH = 255

_SCOPE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]{0,31}$")
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def check_scope(scope: object, plugin: str) -> str:
    """A discovery scope (an application name): 1-40 of ``a-z 0-9 -``. Raises ConfigError."""
    if not isinstance(scope, str) or not _SCOPE_RE.match(scope):
        raise ConfigError(plugin, "scope", "1-40 characters of a-z, 0-9 and '-'", scope)
    return scope


def with_host(address: str, host: str) -> str:
    """``address`` with its wildcard host (``0.0.0.0``, ``::``) replaced by ``host``."""
    if not is_wildcard(address):
        return address
    parts = urlsplit(address)
    literal = f"[{host}]" if ":" in host else host
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def is_wildcard(address: str) -> bool:
    """Whether ``address`` listens on every interface (its host is ``0.0.0.0`` or ``::``)."""
    try:
        parts = urlsplit(address)
        return parts.hostname in _WILDCARD_HOSTS or (not parts.hostname and bool(parts.port))
    except ValueError:
        return False


def link_addresses(addresses: Iterable[str], ip: str, *, strict: bool = True) -> tuple[str, ...]:
    """What to announce on the link whose address is ``ip`` (RFC 6762 section 15: each
    link hears only addresses reachable on it): wildcards become ``ip``; with ``strict``
    (listen addresses, not ``advertise``) an address bound to another IP is left out. All
    of them (wildcards resolved) when that would leave nothing."""
    listed = tuple(addresses)
    out: list[str] = []
    link = ipaddress.ip_address(ip)
    for address in listed:
        if is_wildcard(address):
            out.append(with_host(address, ip))
            continue
        try:
            host = ipaddress.ip_address(urlsplit(address).hostname or "")
        except ValueError:  # a name, or a scheme without a host: announce as is
            out.append(address)
            continue
        if not strict or host == link or (host.is_loopback and link.is_loopback):
            out.append(address)
    if not out:
        out = [with_host(a, ip) for a in listed]
    return tuple(dict.fromkeys(out))


def _check_address(address: object) -> str:
    if not isinstance(address, str):
        raise AnnouncementError(f"address {address!r} is not text")
    if len(address.encode("utf-8", "surrogatepass")) > MAX_ADDRESS_LENGTH:
        raise AnnouncementError(f"address longer than {MAX_ADDRESS_LENGTH} bytes")
    if not address.isprintable():
        raise AnnouncementError(f"address {address!r} has control characters")
    scheme, sep, _ = address.partition("://")
    if not sep or not _SCHEME_RE.match(scheme):
        raise AnnouncementError(f"address {address!r} is not a URL such as tcp://HOST:PORT")
    try:
        urlsplit(address).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise AnnouncementError(f"address {address!r}: {exc}") from exc
    return address


def check_announcement(
    peer_id: object,
    addresses: object,
    *,
    source: str,
    hosts: Iterable[str] = (),
) -> PeerRecord:
    """The record a peer announced, or :class:`AnnouncementError` saying what is wrong.

    Wildcard addresses are replaced by one address per entry of ``hosts`` (the IPs the
    announcement came from, e.g. a datagram's sender); without ``hosts`` they are dropped.
    """
    if not isinstance(peer_id, str) or not is_peer_id(peer_id):
        raise AnnouncementError(f"peer id {str(peer_id)[:80]!r} is not a peer id")
    if not isinstance(addresses, list | tuple):
        raise AnnouncementError("addresses are not a list")
    if not 0 < len(addresses) <= MAX_ADDRESSES:
        raise AnnouncementError(f"expected 1 to {MAX_ADDRESSES} addresses, got {len(addresses)}")
    checked = [_check_address(a) for a in addresses]
    senders = [h for h in hosts if _is_ip(h)]
    out: list[str] = []
    for address in checked:
        for resolved in ([with_host(address, h) for h in senders] if is_wildcard(address)
                         else [address]):
            if resolved not in out and not is_wildcard(resolved):
                out.append(resolved)
    if not out:
        raise AnnouncementError("no dialable address (only wildcards, and no sender address)")
    return PeerRecord(addresses=tuple(out), peer_id=peer_id, source=source)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass
class PresenceTable:
    """The peers heard from recently, and which of them went silent for ``expiry`` seconds."""

    expiry: float
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[PeerRecord, float]] = field(default_factory=dict)

    def heard(self, record: PeerRecord) -> bool:
        """Note that ``record`` was just heard; True when it is new or its addresses changed."""
        assert record.peer_id is not None
        previous = self._seen.get(record.peer_id)
        self._seen[record.peer_id] = (record, self.clock())
        return previous is None or previous[0] != record

    def remove(self, peer_id: str) -> PeerRecord | None:
        """Forget ``peer_id`` (it said goodbye); its record if it was known."""
        entry = self._seen.pop(peer_id, None)
        return None if entry is None else entry[0]

    def expired(self) -> list[PeerRecord]:
        """Forget and return every peer silent for longer than ``expiry``."""
        deadline = self.clock() - self.expiry
        gone = [pid for pid, (_, at) in self._seen.items() if at < deadline]
        return [self._seen.pop(pid)[0] for pid in gone]

    def records(self) -> list[PeerRecord]:
        """Every peer currently present."""
        return [record for record, _ in self._seen.values()]

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._seen


@dataclass
class RejectLog:
    """Logs rejected announcements: a warning per sender per ``window`` seconds, then debug.

    A hostile sender can flood a LAN with junk; this keeps the log readable while still
    saying who sends it and why it was ignored.
    """

    logger: logging.Logger
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    #: How many announcements were rejected in total.
    count: int = 0
    #: How many were rejected, by :data:`REJECT_REASONS`.
    reasons: Counter[str] = field(default_factory=Counter)
    _last: dict[str, float] = field(default_factory=dict)

    def reject(self, sender: str, reason: str) -> None:
        """Record that an announcement from ``sender`` was ignored because of ``reason``
        (counted under the reason its first words name, else ``malformed``)."""
        self.count += 1
        self.reasons[AnnouncementError(reason).reason] += 1
        now = self.clock()
        last = self._last.get(sender)
        if last is not None and now - last < self.window:
            self.logger.debug("ignored announcement from %s: %s", sender, reason)
            return
        if len(self._last) > 1024:  # a spoofing flood must not grow this without bound
            self._last.clear()
        self._last[sender] = now
        self.logger.warning("ignored announcement from %s: %s", sender, reason)
