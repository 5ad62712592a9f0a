"""Stored messages ("letters") on inbox media: sent without a handshake, handled when the
recipient runs.

A sender that knows ``MEDIUM#PEERID`` appends one sealed LETTER record to that peer's
inbox (creating it if the peer never ran) and is done once the medium acknowledged the
append. The peer id is the recipient's public key, so the letter is sealed to it and
signed by the sender, as sealed frames are (``wire/_sealed.py``). Inside the seal::

    u8   delivery mode     0 at-most-once, 1 at-least-once, 2 effectively-once (the
                           sender's declaration; the receiver's own mode of the topic wins)
    ...  envelope          with sender, recipient and content type (the codec) filled in

The receiver takes letters in the medium's order, opens each, checks it against the
record that carried it, applies the trust policy, and hands it to the dispatcher through
a :class:`LetterChannel`, a channel without a connection: a request's reply goes back as
a letter to the requester's reply inbox, if it still exists.

The node asks :meth:`Letters.storing` whether a send to an address is stored, and hands
it here (:meth:`Letters.store`, :meth:`Letters.request`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2phost_sdk import (
    AddressError,
    Codec,
    CodecError,
    DeliveryMode,
    HandshakeError,
    PeerInfo,
    PeerUnavailable,
    RequestTimeout,
    TaskOwner,
    Transport,
    TransportError,
)
from p2phost_sdk.inbox import InboxTransport, Letter

from ..._schemes import scheme_of
from .._errors import WireError, bad_address
from ..wire._channel import Channel
from ..wire._envelope import Envelope, Kind, decode
from ..wire._sealed import Sealer, SealError
from ..wire._window import RequestWindow

if TYPE_CHECKING:
    from ..delivery._delivery import Reliable
    from ..messaging._dispatch import Dispatcher
    from ..wire._handshake import Admit
    from ._dialler import Link

log = logging.getLogger("p2phost.node")

_MODES = {DeliveryMode.AT_MOST_ONCE: 0, DeliveryMode.AT_LEAST_ONCE: 1,
          DeliveryMode.EFFECTIVELY_ONCE: 2}
#: Letters sealed longer ago than this are refused: the receiver forgets letter
#: sessions after as long (the SDK's LETTER_MAX_AGE), so an older one could be a replay.
MAX_AGE = 7 * 24 * 3600.0
#: Seconds a node stores for an address whose dial failed before it dials it again.
RETRY_DIAL = 30.0


@dataclass
class _Session:
    """This node's outgoing letter session to one peer."""

    public: bytes
    recipient: bytes
    cipher: Any
    #: From 1: the receiver's letter journal counts seq 0 as done (its watermark).
    counter: int = 1


class LetterChannel(Channel):
    """A channel to one peer through its inbox on one medium, without a connection."""

    stored = True

    def __init__(self, letters: Letters, *, peer_id: str, address: str, codec: Codec,
                 reply_inbox: str | None, answering: bool) -> None:
        # No connection, hello, reader or writer, but every other public field of a
        # channel (tests/runtime/test_letter_channel.py): code that reads one of a
        # channel it was handed must not fail on a letter's (a reply's look at
        # ``usable`` once did: the answer was lost).
        self.peer_id = peer_id
        self.codec = codec
        self.content_type = codec.content_type
        self.reads_raw = False  # (a peer says it in its hello; a letter has none)
        self.local_nonce = ""
        self.last_seen = self.progress_at = time.monotonic()
        self.rtt = None
        self.pinged = 0.0
        self.stalled = False
        self.peer_done = asyncio.Event()
        self.remote_reason = ""
        self.address = address
        self.topics: frozenset[str] = frozenset()
        self.tallies: dict[str, Any] = {}
        self.info = PeerInfo(peer_id, address, self.topics, codec.content_type)
        self.frame_limit = letters.frame_limit
        self.frame_limit_source = f"the message size limit of the medium at {address}"
        self.ended = False
        self.closing = False
        self.usable = True  # (answers go out as letters for as long as it lives)
        self.run_waiting = False  # (no outbox: a letter is never part of a run)
        # (a medium stores what it is sent: no reader of the peer's to wait for)
        self.window = RequestWindow(math.inf, self.try_post)
        self.initiator = True
        self._letters = letters
        #: Where answers to the peer go (its reply inbox), when this channel answers.
        self.reply_inbox = reply_inbox
        self.answering = answering

    def post(self, frame: bytes) -> None:
        """An answer (an ERROR, a REPLY) goes out as a letter; ACKs are not needed (the
        sender of a letter is done once the medium has it)."""
        if len(frame) > 1 and frame[1] == Kind.ACK:
            return
        self._letters.tasks.spawn(self.send(frame), "letter answer")

    def try_post(self, frame: bytes) -> bool:
        """Never at once: a letter is an append to the medium."""
        return False

    async def send(self, frame: bytes) -> None:
        """Seal ``frame`` to the peer and store it in its inbox."""
        if not self.answering:
            await self._letters.post(self, frame)
            return
        if self.reply_inbox is None:
            log.warning("cannot answer a stored request from %s: it was sent by a pure "
                        "producer, which reads no inbox", self.peer_id)
            return
        try:
            await self._letters.post(self, frame)
        except TransportError as exc:
            log.warning("cannot answer a stored request from %s: %s", self.peer_id, exc)


class Letters:
    """A node's letters: storing them for peers, and taking those stored for it."""

    def __init__(self, *, identity: Any, dispatch: Dispatcher, reliable: Reliable,
                 link: Link, ids: Iterator[int], codecs: Mapping[str, Codec],
                 transports: Mapping[str, Transport], admit: Admit | None, client: bool,
                 frame_limit: int) -> None:
        self.identity = identity
        self.peer_id: str = identity.peer_id
        self.sealer = Sealer(identity, replay_window=MAX_AGE)
        self.dispatch = dispatch
        self.reliable = reliable
        self.link = link
        self._ids = ids
        self.codecs = list(codecs.values())
        self.transports = transports
        self.admit = admit
        self.client = client
        self.frame_limit = frame_limit
        self.tasks = TaskOwner("letters", logger=log)
        self.rejected = 0
        self._sessions: dict[str, _Session] = {}
        self._refusals: dict[str, str] = {}
        # address -> until when (monotonic) a dial there is not tried again
        self._unreachable: dict[str, float] = {}

    def attach(self) -> None:
        """Take the letters of every inbox this node reads (before it listens)."""
        for transport in set(self.transports.values()):
            if isinstance(transport, InboxTransport):
                transport.on_letters(self.receive)

    # -- sending ---------------------------------------------------------------------

    def _transport(self, address: str) -> InboxTransport | None:
        transport = self.transports.get(scheme_of(address))
        return transport if isinstance(transport, InboxTransport) else None

    def refusal(self, address: str) -> str | None:
        """Why letters cannot be stored at ``address`` ("" when they can; None: it is
        not an inbox address)."""
        transport = self._transport(address)
        if transport is None:
            return None
        medium = address.split("#", 1)[0]
        known = self._refusals.get(medium)
        if known is not None:
            return known
        try:
            known = transport.make_medium(transport.parse(medium)).cannot_store
        except TransportError:
            return ""  # the address is wrong: storing it says so
        if len(self._refusals) < 1024:
            self._refusals[medium] = known
        return known

    def channel(self, address: str) -> LetterChannel:
        """A channel that stores letters for the peer of ``address``."""
        transport = self._transport(address)
        assert transport is not None
        parsed = transport.parse(address)
        if parsed.peer_id is None:
            expected = f"{transport.address_example}#PEERID"
            raise bad_address(AddressError(address, f"it names no peer (expected {expected}, "
                                           "as `p2phost run` of that node prints it)",
                                           expected=expected))
        if parsed.peer_id == self.peer_id and not self.client:
            raise PeerUnavailable("a node cannot send to itself")
        return LetterChannel(self, peer_id=parsed.peer_id, address=address,
                             codec=self.codecs[0], reply_inbox=None, answering=False)

    def worth_dialling(self, address: str) -> bool:
        """Whether to try a connection before storing: a node that reads an inbox on the
        medium is a peer there (a running peer gets a session, as before); a pure
        producer or the CLI never dials; an address that did not answer lately is not
        dialled again for :data:`RETRY_DIAL` seconds."""
        transport = self._transport(address)
        if self.client or transport is None or not transport.reads_on(address):
            return False
        until = self._unreachable.get(address)
        return until is None or until < time.monotonic()

    def unreachable(self, address: str) -> None:
        """A dial to ``address`` failed: store for it without dialling for a while."""
        if len(self._unreachable) > 4096:
            self._unreachable.clear()
        self._unreachable[address] = time.monotonic() + RETRY_DIAL

    def check_request(self, address: str) -> None:
        """A request needs an inbox for its reply: a pure producer has none."""
        transport = self._transport(address)
        if transport is not None and not self.client and not transport.reads_on(address):
            medium = transport.parse(address).public
            raise PeerUnavailable(
                f"cannot make a request to {address}: this node reads no inbox on {medium}, "
                "so no reply could reach it (it only produces there); add "
                f"{medium} to [node] listen in p2phost.toml, or send without a reply")

    def mode_byte(self, topic: str) -> int:
        """The sender's declared mode of ``topic``."""
        policy = self.reliable.policies.get(topic)
        return _MODES.get(DeliveryMode(policy.mode), 0) if policy is not None else 0

    async def post(self, channel: LetterChannel, frame: bytes) -> str:
        """Seal ``frame`` (an envelope) to the channel's peer and store it; the medium's
        public URL."""
        transport = self._transport(channel.address)
        assert transport is not None
        envelope = decode(frame)
        envelope.sender, envelope.recipient = self.peer_id, channel.peer_id
        envelope.content_type = channel.codec.content_type
        inner = bytes((self.mode_byte(envelope.topic),)) + envelope.to_frame()
        session = self._sessions.get(channel.peer_id)
        if session is None:
            try:
                keys = self.sealer.session_to(channel.peer_id)
            except HandshakeError as exc:
                raise PeerUnavailable(f"{exc} (the peer id after '#' is not a usable "
                                      "public key: check the address)") from None
            session = self._sessions[channel.peer_id] = _Session(*keys)
        counter, session.counter = session.counter, session.counter + 1
        sealed = self.sealer.seal(inner, session.public, session.recipient, session.cipher,
                                  counter)
        return await transport.post(
            channel.address, sealed, session=session.public[:16], seq=counter,
            reply=envelope.kind is Kind.REQUEST,
            inbox=channel.reply_inbox if channel.answering else None)

    # -- what the node sends ---------------------------------------------------------

    def stores(self, address: str) -> bool:
        """Whether a message to ``address`` is stored in the peer's inbox (an inbox
        address on a medium that holds messages, its peer not connected now)."""
        if self.refusal(address) != "":
            return False
        peer_id = address.rsplit("#", 1)[1] if "#" in address else ""
        return self.link.usable(self.link.address_peers.get(address, peer_id)) is None

    async def storing(self, address: str) -> bool:
        """Whether a message to ``address`` is stored rather than sent on a connection:
        a running peer gets a session first when this node is a peer on that medium."""
        if "://" not in address or not self.stores(address):
            return False
        if not self.worth_dialling(address):
            return True
        try:
            await self.link.connect(address)
        except PeerUnavailable as exc:
            log.info("storing messages for %s (no connection: %s)", address, exc)
            self.unreachable(address)
            return True
        return False

    async def store(self, address: str, topic: str, body: Any, key: str | None) -> str:
        """Store one message for the peer of ``address``; the medium's URL."""
        channel = self.channel(address)
        message_id = key_id(key) if key is not None else next(self._ids)
        frame = self.dispatch.frame(channel, Kind.MESSAGE, message_id, topic, body)
        try:
            url = await self.post(channel, frame)
        except TransportError as exc:
            raise PeerUnavailable(str(exc)) from exc
        self.dispatch.stats.message_out(topic, channel.peer_id, len(frame))  # as a sent one
        return url

    async def request(self, address: str, topic: str, body: Any,
                      timeout: float | None) -> Any:
        """Store a request; its reply comes as a letter to this node's inbox."""
        self.check_request(address)
        channel = self.channel(address)
        try:
            return await self.dispatch.request(channel, topic, body, timeout)
        except TransportError as exc:
            raise PeerUnavailable(str(exc)) from exc
        except RequestTimeout as exc:
            raise RequestTimeout(
                f"{exc}: the request was stored in its inbox, and {channel.peer_id} did not "
                "answer in time (is it running? a request is answered only while the "
                "requester waits)") from None

    def explain(self, address: str, exc: PeerUnavailable) -> PeerUnavailable:
        """A failed dial of ``address``, saying why its medium cannot store either."""
        refusal = self.refusal(address)
        if not refusal or not isinstance(exc.__cause__, TransportError):
            return exc
        return PeerUnavailable(f"{exc}; {refusal}")

    # -- receiving -------------------------------------------------------------------

    async def receive(self, letter: Letter) -> None:
        """One letter from this node's inbox, in the medium's order."""
        try:
            envelope, codec = self._open(letter)
        except (SealError, WireError) as exc:
            self.rejected += 1
            letter.reject(str(exc))
            return
        channel = LetterChannel(self, peer_id=letter.sender,
                                address=f"{letter.medium}#{letter.sender}", codec=codec,
                                reply_inbox=letter.reply_inbox, answering=True)
        if envelope.kind in (Kind.REPLY, Kind.ERROR):
            try:
                self.dispatch.on_reply(channel, envelope)
            except CodecError as exc:
                log.warning("a stored reply from %s: %s", letter.sender, exc)
            letter.done()
            return
        if envelope.kind not in (Kind.MESSAGE, Kind.REQUEST):
            self.rejected += 1
            letter.reject(f"a stored {envelope.kind.name} cannot be handled")
            return
        if self.admit is not None and letter.sender != self.peer_id:
            # Twice, as for a connection's peer: the proven id, then the id with its
            # name, which under tofu records a new sender (a letter names no node name).
            reason = self.admit(letter.sender, None) or self.admit(letter.sender, "")
            if reason is not None:
                self.reliable.refuse(channel, envelope, letter.done,
                                     f"refused by the trust policy: {reason}")
                return
        try:
            waiting = self.dispatch.on_message(channel, envelope, letter.done)
        except (CodecError, WireError) as exc:
            self.reliable.refuse(channel, envelope, letter.done,
                                 f"poison message: the body cannot be decoded as "
                                 f"{codec.content_type}: {exc}")
            return
        if waiting is not None:
            await waiting

    def _open(self, letter: Letter) -> tuple[Envelope, Codec]:
        frame, session, counter, sealed_at = self.sealer.unseal(letter.payload, letter.sender)
        if session[:16] != letter.session or counter != letter.seq:
            raise SealError(f"a stored record from {letter.sender} does not match the letter "
                            "sealed inside it (altered on the medium)")
        age = time.time() - sealed_at
        if age > MAX_AGE:
            raise SealError(f"a letter from {letter.sender} was sealed {age / 86400:.1f} days "
                            f"ago, longer than letters are remembered ({MAX_AGE / 86400:g} "
                            "days)")
        if not frame:
            raise WireError(f"an empty letter from {letter.sender}")
        envelope = decode(frame[1:])
        if envelope.sender != letter.sender or envelope.recipient != self.peer_id:
            raise SealError(f"a letter from {letter.sender} names another sender or "
                            "recipient inside")
        codec = next((c for c in self.codecs if c.content_type == envelope.content_type), None)
        if codec is None:
            have = ", ".join(c.content_type for c in self.codecs)
            raise WireError(f"a letter from {letter.sender} is encoded as "
                            f"{envelope.content_type!r}, which no codec here reads ({have})")
        return envelope, codec

    async def close(self, timeout: float) -> None:
        """Stop answers still on their way out (waiting up to ``timeout`` seconds)."""
        await self.tasks.close(timeout)


def key_id(key: str) -> int:
    """A message id derived from an idempotency key (stable across senders' restarts)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") >> 1

