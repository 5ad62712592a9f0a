"""The :class:`InboxTransport`: a transport over any :class:`Medium`, addressed by URL.

``listen("redis://127.0.0.1:6379/0")`` opens this node's inbox there (named by its peer
id) and reports ``redis://127.0.0.1:6379/0#PEERID``; ``dial`` of such an address opens
a connection through that inbox. A plugin subclasses it and says how to make a medium.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from .._address import port_problem
from .._context import PluginContext
from .._errors import AddressError, ForeignRecord, TransportError, UnknownInbox
from .._peer_ids import is_peer_id
from .._transport import AcceptHandler, Connection, Listener, Transport
from ._endpoint import Endpoint
from ._journal import Journal
from ._letters import LetterHandler, LetterJournal, read_counts
from ._medium import Medium
from ._options import InboxOptions
from ._record import Record, RecordType, decode

T = TypeVar("T")
#: Records ``inbox stats`` looks at to name the senders.
PEEK = 10_000


@dataclass(frozen=True)
class MediumAddress:
    """An inbox address taken apart."""

    #: The medium's URL to connect with (credentials kept, no fragment).
    url: str
    #: The medium's URL to show and advertise (no password, no fragment).
    public: str
    #: The parts of ``url``, for the plugin to read host, port, path and query.
    parts: SplitResult
    #: The peer id in the fragment, if any.
    peer_id: str | None


class InboxListener(Listener):
    """This node listening on its inbox on one medium."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self.addresses = [endpoint.address]

    async def close(self) -> None:
        """Refuse new connections (open ones stay). Idempotent."""
        self._endpoint.accept = None


class InboxTransport(Transport):
    """A transport over a shared medium where each node has an inbox.

    Subclasses set ``schemes``, ``default_port`` and ``address_example`` and implement
    :meth:`make_medium`.
    """

    inbox_based = True
    #: The port an address without one means.
    default_port: ClassVar[int] = 0
    #: The address form shown when an address is wrong, e.g. ``redis://HOST:PORT/DB``.
    address_example: ClassVar[str] = ""

    def __init__(self, *, peer_id: str, max_frame_size: int = 16 * 1024 * 1024,
                 state_dir: Path | None = None, options: InboxOptions | None = None) -> None:
        if not is_peer_id(peer_id):
            raise TransportError(f"{peer_id!r} is not a peer id")
        self.peer_id = peer_id
        self.max_frame_size = max_frame_size
        self.state_dir = state_dir
        self.options = options or InboxOptions()
        # (medium URL, listening) -> endpoint; a node that only dials gets its own
        # reply inbox, so it never disturbs the inbox it listens on.
        self._endpoints: dict[tuple[str, bool], Endpoint] = {}
        # Append-only endpoints of a node that sends letters where it reads nothing.
        self._producers: dict[str, Endpoint] = {}
        self._lock = asyncio.Lock()
        self._letters: LetterHandler | None = None

    def on_letters(self, handler: LetterHandler) -> None:
        """Hand every letter (stored record) this node's inboxes take to ``handler``,
        in order per inbox. Without one, letters stay on the medium unread."""
        self._letters = handler
        for endpoint in self._endpoints.values():
            endpoint.letters = handler

    @classmethod
    def from_context(cls, context: PluginContext, **settings: Any) -> Self:
        """The transport of a node, from its plugin context (``[config.NAME]`` gives the
        :class:`InboxOptions`; ``settings`` go to the subclass)."""
        options = InboxOptions.from_config(context.config, context.name)
        return cls(peer_id=context.peer_id, max_frame_size=context.max_frame_size,
                   state_dir=context.state_dir, options=options, **settings)

    @abstractmethod
    def make_medium(self, address: MediumAddress) -> Medium:
        """A medium for ``address`` (not yet connected, and cheap: ``check_address``
        makes one to check the URL); ``AddressError`` if the URL is wrong for this medium
        (naming the form expected)."""

    def check_address(self, address: str) -> None:
        """Raise ``AddressError`` when ``address`` is malformed for this medium (the
        URL's form, then what the medium itself requires of it, e.g. a database), before
        anything connects: the host checks ``p2phost.toml`` at start and ``run --check``."""
        parsed = self.parse(address)
        try:
            self.make_medium(parsed)
        except AddressError:
            raise
        except TransportError as exc:  # a medium written before AddressError: the same
            problem = str(exc).removeprefix(f"bad address {parsed.public!r}: ")
            raise AddressError(address, problem, expected=self.address_example
                               or f"{self.schemes[0]}://HOST:PORT") from exc

    def _no_peer(self, address: str) -> AddressError:
        """A dial or a letter to ``address``, which names no peer (fine to listen on)."""
        expected = f"{self.address_example}#PEERID"
        return AddressError(address, f"it names no peer (expected {expected}, as `p2phost "
                            "run` of that node prints it)", expected=expected)

    def parse(self, address: str) -> MediumAddress:
        """Take ``address`` apart; ``AddressError`` says what is wrong with it."""
        cache = self.__dict__.setdefault("_parsed", {})
        known: MediumAddress | None = cache.get(address)
        if known is None:
            known = self._parse(address)
            if len(cache) < 1024:  # a stored send parses its address a few times
                cache[address] = known
        return known

    def _parse(self, address: str) -> MediumAddress:
        # Case-insensitive (RFC 3986), as the host picks the transport: NATS://... is
        # nats://... (urlsplit lowers it in the parts, so ``public`` is lower case).
        scheme = address.split("://", 1)[0].lower() if "://" in address else ""
        example = self.address_example or f"{self.schemes[0]}://HOST:PORT"
        if scheme not in self.schemes:
            raise AddressError(address, f"expected {example}", expected=example)
        try:
            parts = urlsplit(address)
        except ValueError as exc:  # an unclosed [IPv6 bracket: an error, not a traceback
            raise AddressError(address, f"{exc} (expected {example})",
                               expected=example) from None
        try:
            port = parts.port or self.default_port
        except ValueError:
            raise AddressError(address, f"{port_problem(parts.netloc, scheme)} (expected "
                               f"{example})", expected=example) from None
        if not parts.hostname:
            raise AddressError(address, f"no host (expected {example})", expected=example)
        peer_id = parts.fragment or None
        if peer_id is not None and not is_peer_id(peer_id):
            raise AddressError(address, f"{peer_id!r} after '#' is not a peer id (expected "
                               f"{example}#PEERID, as `p2phost run` prints it)",
                               expected=f"{example}#PEERID")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        user = f"{parts.username}@" if parts.username else ""
        secret = f"{parts.username or ''}:{parts.password}@" if parts.password is not None \
            else user
        full = parts._replace(netloc=f"{secret}{host}:{port}", fragment="")
        public = urlunsplit(full._replace(netloc=f"{user}{host}:{port}"))
        return MediumAddress(urlunsplit(full), public, full, peer_id)

    async def _endpoint(self, address: MediumAddress, *, listening: bool,
                        accept: AcceptHandler | None, retry_for: float) -> Endpoint:
        async with self._lock:
            key = (address.public, listening)
            endpoint = self._endpoints.get(key)
            if endpoint is not None:
                return endpoint
            inbox = self.peer_id if listening else f"{self.peer_id}-{secrets.token_hex(4)}"
            medium = self.make_medium(address)
            journal, letters = None, None
            if listening and medium.durable and self.state_dir is not None:
                digest = hashlib.sha256(f"{address.public}#{self.peer_id}".encode()).hexdigest()
                journal = Journal(self.state_dir / f"inbox-{digest[:16]}.journal")
                letters = LetterJournal(self.state_dir / f"inbox-{digest[:16]}.letters")
            endpoint = Endpoint(medium, peer_id=self.peer_id, inbox=inbox,
                                max_frame_size=self.max_frame_size, options=self.options,
                                journal=journal, letter_journal=letters)
            endpoint.letters = self._letters
            if accept is not None:
                endpoint.listen(accept)
            try:
                await endpoint.start(retry_for=retry_for)
            except BaseException:
                await endpoint.close()
                raise
            self._endpoints[key] = endpoint
            return endpoint

    async def listen(self, address: str, accept: AcceptHandler) -> Listener:
        """Open this node's inbox on the medium (retrying while it is down, for
        ``connect_timeout`` seconds) and accept connections through it."""
        parsed = self.parse(address)
        if parsed.peer_id not in (None, self.peer_id):
            raise TransportError(f"cannot listen on {address}: the peer id after '#' is not "
                                 f"this node's ({self.peer_id}); leave it out")
        existing = self._endpoints.get((parsed.public, True))
        if existing is not None:
            if existing.accept is not None:
                raise TransportError(f"cannot listen on {address}: this node already listens "
                                     "on that medium")
            existing.listen(accept)
            return InboxListener(existing)
        endpoint = await self._endpoint(parsed, listening=True, accept=accept,
                                        retry_for=self.options.connect_timeout)
        return InboxListener(endpoint)

    async def dial(self, address: str, *, timeout: float) -> Connection:
        """Open a connection to the node whose peer id is the address's fragment."""
        parsed = self.parse(address)
        if parsed.peer_id is None:
            raise self._no_peer(address)
        loop = asyncio.get_running_loop()
        started = loop.time()
        endpoint = self._endpoints.get((parsed.public, True))
        if endpoint is None:
            try:
                async with asyncio.timeout(timeout):
                    endpoint = await self._endpoint(parsed, listening=False, accept=None,
                                                    retry_for=0.0)
            except TimeoutError:
                raise TransportError(f"cannot reach {parsed.public}: no answer within "
                                     f"{timeout:g}s") from None
        return await endpoint.dial(parsed.peer_id, max(0.1, timeout - (loop.time() - started)))

    def reads_on(self, address: str) -> bool:
        """Whether this node listens on the medium of ``address``."""
        return (self.parse(address).public, True) in self._endpoints

    async def post(self, address: str, payload: bytes, *, session: bytes, seq: int,
                   reply: bool, inbox: str | None = None) -> str:
        """Store ``payload`` as a letter for the peer of ``address`` (``MEDIUM#PEERID``),
        offline, never run, or running; return once the medium acknowledged the append.

        ``session`` (16 bytes) and ``seq`` name the letter (the receiver takes each
        once). With ``reply``, the letter names an inbox of this node for answers (its
        listening inbox there, or a short-lived one); otherwise it names the inbox this
        node reads there, if any. ``inbox``: append to that inbox of the peer (a reply
        inbox named by a letter it sent) instead of its own, never creating it.
        Raises TransportError when the medium cannot store letters (core NATS) or is
        unreachable for ``send-timeout`` seconds.
        """
        parsed = self.parse(address)
        if parsed.peer_id is None:
            raise self._no_peer(address)
        timeout = self.options.connect_timeout
        endpoint = self._endpoints.get((parsed.public, True))
        if endpoint is None and (reply or inbox is not None):
            endpoint = self._endpoints.get((parsed.public, False))
            if endpoint is None:
                endpoint = await self._endpoint(parsed, listening=False, accept=None,
                                                retry_for=timeout)
        if endpoint is None:
            endpoint = await self._producer(parsed, timeout)
        if len(payload) > endpoint.frame_limit:
            raise TransportError(f"a message of {len(payload)} bytes is too large for "
                                 f"{parsed.public} {endpoint.limit_reason}")
        record = Record(RecordType.LETTER, True, session, 0, seq, self.peer_id, payload,
                        "" if endpoint.inbox == self.peer_id or not endpoint.reads
                        else endpoint.inbox, no_reply=not endpoint.reads)
        if inbox is None:
            await endpoint.post(parsed.peer_id, record.encode(), create=True)
            return parsed.public
        try:
            await endpoint.post(inbox, record.encode(), create=False)
        except UnknownInbox:
            raise TransportError(f"the reply inbox {inbox} on {parsed.public} is gone (its "
                                 "reader stopped waiting)") from None
        return parsed.public

    # -- operators (``p2phost inbox ...``) -------------------------------------------

    def _journal_path(self, address: MediumAddress) -> Path | None:
        if self.state_dir is None:
            return None
        digest = hashlib.sha256(f"{address.public}#{self.peer_id}".encode()).hexdigest()
        return self.state_dir / f"inbox-{digest[:16]}.letters"

    async def _on_medium(self, address: str, work: Callable[[Medium, str], Awaitable[T]]) -> T:
        parsed = self.parse(address)
        endpoint = Endpoint(self.make_medium(parsed), peer_id=self.peer_id, inbox=self.peer_id,
                            max_frame_size=self.max_frame_size, options=self.options,
                            journal=None, reads=False)
        try:
            await endpoint.start(retry_for=self.options.connect_timeout)
            return await work(endpoint.medium, self.peer_id)
        finally:
            await endpoint.close()

    async def inbox_stats(self, address: str) -> dict[str, Any]:
        """What this node's inbox at ``address`` holds and what became of its letters:
        ``exists``, ``records``, ``bytes``, ``oldest`` (Unix time), ``senders`` (peer
        id -> records waiting; None when the medium cannot look), and the counts of
        letters ``handled``, ``rejected`` (altered, forged, stale) and ``copies``."""
        parsed = self.parse(address)

        async def look(medium: Medium, name: str) -> dict[str, Any]:
            answer = await medium.inbox_stats(name)
            peeked = await medium.peek(name, PEEK)
            senders: dict[str, int] | None = None
            oldest = answer.get("oldest")
            if peeked:
                senders = {}
                for data, when in peeked:
                    try:
                        sender = decode(data).sender
                    except ForeignRecord:
                        sender = "(foreign)"
                    senders[sender] = senders.get(sender, 0) + 1
                    if when is not None and (oldest is None or when < oldest):
                        oldest = when
            elif answer.get("records") == 0:
                senders = {}
            return {**answer, "oldest": oldest, "senders": senders}

        answer = await self._on_medium(address, look)
        counts = read_counts(self._journal_path(parsed))
        answer.update({k: counts.get(k, 0) for k in ("handled", "rejected", "copies")})
        answer["expired"] = counts.get("expired", 0) + int(answer.get("expired") or 0)
        return {"medium": parsed.public, "inbox": self.peer_id, **answer}

    async def purge_inbox(self, address: str) -> int | None:
        """Remove what waits in this node's inbox at ``address`` (it stays); how many."""
        return await self._on_medium(address, lambda medium, name: medium.purge_inbox(name))

    async def delete_inbox(self, address: str) -> bool:
        """Remove this node's inbox at ``address`` and what it holds (its next run makes
        a new, empty one); whether there was one."""
        return await self._on_medium(address, lambda medium, name: medium.delete_inbox(name))

    async def _producer(self, address: MediumAddress, timeout: float) -> Endpoint:
        async with self._lock:
            endpoint = self._producers.get(address.public)
            if endpoint is None:
                endpoint = Endpoint(self.make_medium(address), peer_id=self.peer_id,
                                    inbox=self.peer_id, max_frame_size=self.max_frame_size,
                                    options=self.options, journal=None, reads=False)
                try:
                    await endpoint.start(retry_for=timeout)
                except BaseException:
                    await endpoint.close()
                    raise
                self._producers[address.public] = endpoint
            return endpoint

    async def close(self) -> None:
        """Close every endpoint: give up connections, remove short-lived inboxes."""
        async with self._lock:
            endpoints, self._endpoints = list(self._endpoints.values()), {}
            endpoints.extend(self._producers.values())
            self._producers = {}
        for endpoint in endpoints:
            await endpoint.close()
