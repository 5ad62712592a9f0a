"""Message-level security for media without a stream (brokers, databases).

There is no stream to run a channel handshake on, and the medium keeps what it carries,
so each frame is sealed on its own: signed by the sender's Ed25519 identity and encrypted
to the recipient. The peer id *is* the Ed25519 public key, so no key exchange is needed:
the sender converts the recipient's key to X25519 (RFC 7748's birational map) and runs an
ephemeral-static Diffie-Hellman per connection direction (a *session*). A sealed frame::

    u8   0x81              version (never 1: a plaintext envelope starts with 1)
    32s  session           the sender's ephemeral X25519 public key for this direction
    u64  counter           per session, from 0
    u64  sealed at         Unix time in ms
    ...  ChaCha20-Poly1305(key, nonce = 4 zero bytes + counter, aad = the 49 bytes above)
         of: Ed25519 signature (64 bytes) + the frame

    key       = HKDF-SHA256(DH(session, recipient), info = b"p2phost-sealed-v1 key" +
                session + sender key + recipient key)
    signature = Ed25519(sender, b"p2phost-sealed-v1\\n" + header + recipient key + frame)

The signature binds the frame to its header and its recipient, so it cannot be moved into
another session or re-encrypted to someone else. A receiver accepts a frame once: frames
sealed longer ago than the replay window (or from too far in the future) are refused, and
within it a :class:`ReplayGuard` remembers the counters of every session; a node with a
state directory keeps the frames it took across restarts (``_guardfile.py``).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2phost_sdk import (
    Connection,
    DeliveredFrame,
    HandshakeError,
    Identity,
    SecureConnection,
    Security,
    public_key_from_peer_id,
)

from .._errors import WireError
from ._guardfile import GuardFile

log = logging.getLogger("p2phost.node")

SEALED_VERSION = 0x81
HEADER = struct.Struct("!B32sQQ")
_SIGNATURE = 64
_TAG = 16
#: Bytes sealing adds to a frame.
OVERHEAD = HEADER.size + _SIGNATURE + _TAG
_SIGN_DOMAIN = b"p2phost-sealed-v1\n"
_KEY_DOMAIN = b"p2phost-sealed-v1 key"
_P = 2**255 - 19
#: How far ahead of ours a sender's clock may be.
CLOCK_SKEW = 120.0
#: Counters a session may arrive out of order by (the media deliver in order).
_WINDOW_BITS = 1024
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


#: Words of a refusal -> the reason it is counted under.
_KINDS = (("replayed", "replayed"), ("fails authentication", "altered"),
          ("not signed by", "forged"), ("replay window", "stale"), ("future", "stale"),
          ("not sealed", "not sealed"))


class SealError(WireError):
    """A sealed frame is forged, altered, replayed or stale: its connection is closed."""


def x25519_public_of(ed25519_public: bytes) -> bytes:
    """The X25519 (Montgomery u) form of an Ed25519 public key: u = (1 + y) / (1 - y)."""
    y = int.from_bytes(ed25519_public, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise ValueError("not an Ed25519 public key usable for X25519")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def x25519_private_of(identity: Identity) -> X25519PrivateKey:
    """The X25519 key of an Ed25519 identity: its secret scalar (X25519 clamps it)."""
    return X25519PrivateKey.from_private_bytes(hashlib.sha512(identity.seed).digest()[:32])


def _derive(shared: bytes, session: bytes, sender: bytes, recipient: bytes) -> ChaCha20Poly1305:
    key = HKDF(hashes.SHA256(), 32, salt=None,
               info=_KEY_DOMAIN + session + sender + recipient).derive(shared)
    return ChaCha20Poly1305(key)


def _nonce(counter: int) -> bytes:
    return b"\0\0\0\0" + counter.to_bytes(8, "big")


@dataclass
class _Seen:
    highest: int
    bits: int
    last: float


@dataclass
class ReplayGuard:
    """The counters seen per (sender, session) within the replay window, node-wide: a
    frame replayed into another connection is caught too."""

    window: float
    limit: int = 100_000
    sessions: OrderedDict[tuple[str, bytes], _Seen] = field(default_factory=OrderedDict)
    _warned: bool = False

    def restore(self, sender: str, session: bytes, highest: int, bits: int, last: float,
                now: float) -> None:
        """Remember a session as a saved guard describes it (unless it left the window)."""
        if last >= now - self.window:
            self.sessions[(sender, session)] = _Seen(highest, bits & ((1 << _WINDOW_BITS) - 1),
                                                     last)

    def seen(self, sender: str, session: bytes, counter: int) -> bool:
        """Whether that frame was admitted (or is too far behind its session's newest to
        tell), without admitting it."""
        seen = self.sessions.get((sender, session))
        if seen is None or counter > seen.highest:
            return False
        behind = seen.highest - counter
        return behind >= _WINDOW_BITS or bool(seen.bits >> behind & 1)

    def admit(self, sender: str, session: bytes, counter: int, sealed_at: float,
              now: float) -> str | None:
        """Why to refuse this frame, or None (and remember it)."""
        if sealed_at < now - self.window:
            return (f"sealed {now - sealed_at:.0f}s ago, before the replay window of "
                    f"{self.window:g}s ([trust] replay-window)")
        if sealed_at > now + CLOCK_SKEW:
            return f"sealed {sealed_at - now:.0f}s in the future (is the sender's clock right?)"
        self.expire(now)
        key = (sender, session)
        seen = self.sessions.get(key)
        if seen is None:
            self.sessions[key] = _Seen(counter, 1, sealed_at)
            return None
        self.sessions.move_to_end(key)
        seen.last = max(seen.last, sealed_at)
        if counter > seen.highest:
            shift = counter - seen.highest
            seen.bits = ((seen.bits << shift) | 1) & ((1 << _WINDOW_BITS) - 1)
            seen.highest = counter
            return None
        behind = seen.highest - counter
        if behind >= _WINDOW_BITS or seen.bits >> behind & 1:
            return f"replayed (frame {counter} of this session was already taken)"
        seen.bits |= 1 << behind
        return None

    def expire(self, now: float) -> None:
        """Forget sessions idle for the whole window (anything replayed from them is
        older than the window and refused for that), and the oldest beyond the limit."""
        sessions = self.sessions
        while sessions:
            key, seen = next(iter(sessions.items()))
            if seen.last >= now - self.window and len(sessions) < self.limit:
                break
            if seen.last >= now - self.window and not self._warned:
                self._warned = True
                log.warning("more than %d sealed sessions within the replay window: "
                            "forgetting the oldest early", self.limit)
            del sessions[key]


class Sealer(Security):
    """Seals the frames of inbox connections; one per node (its replay guard is shared)."""

    protocol = "sealed"

    def __init__(self, identity: Identity, *, replay_window: float,
                 path: Path | None = None) -> None:
        self.identity = identity
        #: The frames taken, on disk at ``path`` (None: remembered for this run only).
        self.file: GuardFile | None = None
        if path is not None:
            self.file = GuardFile(path, ReplayGuard(replay_window))
            self.file.load()
        #: The frames admitted in this run (taken or not).
        self.guard = ReplayGuard(replay_window)
        self._private = x25519_private_of(identity)
        self._public = identity.public_key
        self._keys: OrderedDict[tuple[str, bytes], ChaCha20Poly1305] = OrderedDict()
        # Parsed once: a key's parsing costs a fifth of a verification.
        self._senders: OrderedDict[str, Ed25519PublicKey] = OrderedDict()

    async def secure(self, connection: Connection, *, identity: Identity, initiator: bool,
                     expected_peer_id: str | None, timeout: float) -> SecureConnection:
        """Wrap ``connection`` (no messages: the medium names the peer, and its first
        sealed frame proves it)."""
        peer_id = connection.remote_peer_id
        if peer_id is None:
            raise HandshakeError("message-level security needs a medium that names the peer")
        return SealedConnection(connection, self, peer_id)

    def session_to(self, peer_id: str) -> tuple[bytes, bytes, ChaCha20Poly1305]:
        """A new outgoing session: (its public key, the recipient's key, the cipher)."""
        recipient = public_key_from_peer_id(peer_id)
        ephemeral = X25519PrivateKey.generate()
        session = ephemeral.public_key().public_bytes(_RAW, _RAW_PUB)
        try:
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(
                x25519_public_of(recipient)))
        except ValueError as exc:
            raise HandshakeError(f"cannot encrypt to {peer_id}: {exc}") from exc
        return session, recipient, _derive(shared, session, self._public, recipient)

    def seal(self, frame: bytes, session: bytes, recipient: bytes,
             cipher: ChaCha20Poly1305, counter: int) -> bytes:
        """One sealed frame."""
        header = HEADER.pack(SEALED_VERSION, session, counter, int(time.time() * 1000))
        signature = self.identity.sign(b"".join((_SIGN_DOMAIN, header, recipient, frame)))
        return header + cipher.encrypt(_nonce(counter), signature + frame, header)

    def open(self, sealed: bytes, sender_id: str) -> bytes:
        """The frame inside ``sealed`` from ``sender_id``; SealError says what is wrong."""
        return self.open_frame(sealed, sender_id)[0]

    def open_frame(self, sealed: bytes, sender_id: str, *,
                   resumed: bool = False) -> tuple[bytes, bytes, int, float]:
        """(frame, session, counter, sealed at) of a genuine, fresh frame; SealError says
        what is wrong (and the refusal is counted). ``resumed``: the frame comes from
        this node's own journal (a resumed connection's opening frame), not the medium:
        taken before the restart, and not a replay for that."""
        try:
            opened = self.unseal(sealed, sender_id)
        except SealError as exc:
            self.refused(str(exc))
            raise
        reason = self.guard.admit(sender_id, opened[1], opened[2], opened[3], time.time())
        if (reason is None and not resumed and self.file is not None
                and self.file.taken.seen(sender_id, opened[1], opened[2])):
            reason = (f"replayed (frame {opened[2]} of this session was taken before this "
                      "node restarted)")
        if reason is not None:
            self.refused(reason)
            raise SealError(f"refused a sealed frame from {sender_id}: {reason}")
        return opened

    def refused(self, why: str) -> None:
        """Count a refused frame under its reason (with a state directory, on disk)."""
        if self.file is not None:
            self.file.refused(next((kind for words, kind in _KINDS if words in why), "other"))

    def taken(self, sender_id: str, session: bytes, counter: int, sealed_at: float,
              ack: Callable[[], None] | None = None) -> None:
        """The node finished that frame: remember it across restarts, then ``ack`` it."""
        if self.file is not None:
            self.file.take(sender_id, session, counter, sealed_at)
        if ack is not None:
            ack()

    def close(self) -> None:
        """Write what is pending of the guard file. Idempotent."""
        if self.file is not None:
            self.file.close()

    def unseal(self, sealed: bytes, sender_id: str) -> tuple[bytes, bytes, int, float]:
        """(frame, session, counter, sealed at) of ``sealed`` from ``sender_id``, checked
        for authenticity but not for freshness; SealError says what is wrong."""
        if len(sealed) < OVERHEAD or sealed[0] != SEALED_VERSION:
            hint = (" (it is a plaintext envelope: does the peer run without a security "
                    "plugin?)") if sealed[:1] == b"\x01" else ""
            raise SealError(f"a frame from {sender_id} is not sealed{hint}")
        header = sealed[:HEADER.size]
        _, session, counter, sealed_ms = HEADER.unpack(header)
        cipher = self._cipher(sender_id, session)
        try:
            inner = cipher.decrypt(_nonce(counter), sealed[HEADER.size:], header)
        except InvalidTag:
            raise SealError(f"a sealed frame from {sender_id} fails authentication (altered "
                            "or forged on the medium, or not encrypted to this node)") from None
        signature, frame = inner[:_SIGNATURE], inner[_SIGNATURE:]
        try:
            self._sender(sender_id).verify(
                signature, b"".join((_SIGN_DOMAIN, header, self._public, frame)))
        except (InvalidSignature, ValueError):
            raise SealError(f"a sealed frame is not signed by {sender_id}, who it claims "
                            "to come from") from None
        return frame, session, counter, sealed_ms / 1000

    def _sender(self, sender_id: str) -> Ed25519PublicKey:
        key = self._senders.get(sender_id)
        if key is None:
            key = self._senders[sender_id] = Ed25519PublicKey.from_public_bytes(
                public_key_from_peer_id(sender_id))
            if len(self._senders) > 4096:
                self._senders.popitem(last=False)
        return key

    def _cipher(self, sender_id: str, session: bytes) -> ChaCha20Poly1305:
        key = (sender_id, session)
        cipher = self._keys.get(key)
        if cipher is not None:
            return cipher
        try:
            sender = public_key_from_peer_id(sender_id)
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(session))
        except ValueError as exc:
            raise SealError(f"a sealed frame from {sender_id} names an unusable session "
                            f"key: {exc}") from None
        cipher = self._keys[key] = _derive(shared, session, sender, self._public)
        if len(self._keys) > 4096:
            self._keys.popitem(last=False)
        return cipher


class SealedConnection(SecureConnection):
    """An inbox connection whose every frame is sealed to the peer and opened from it."""

    def __init__(self, inner: Connection, sealer: Sealer, peer_id: str) -> None:
        self.inner = inner
        self.remote_peer_id = peer_id
        self.local_address = inner.local_address
        self.remote_address = inner.remote_address
        limit = inner.max_frame_size
        self.max_frame_size = None if limit is None else limit - OVERHEAD
        self._sealer = sealer
        self._session, self._recipient, self._cipher = sealer.session_to(peer_id)
        self._counter = 0
        # A connection resumed after a restart: its first frame comes from the journal.
        self._resumed = bool(getattr(inner, "swallow_first_frame", False))

    def _seal(self, frame: bytes) -> bytes:
        counter, self._counter = self._counter, self._counter + 1
        return self._sealer.seal(frame, self._session, self._recipient, self._cipher, counter)

    async def send(self, frame: bytes) -> None:
        """Seal and send one frame."""
        await self.inner.send(self._seal(frame))

    async def send_many(self, frames: list[bytes]) -> None:
        """Seal and send several frames in order."""
        await self.inner.send_many([self._seal(f) for f in frames])

    async def recv(self) -> bytes:
        """The next frame, opened; SealError (after acknowledging it, so the medium
        forgets it) when it is not a genuine, fresh frame from the peer."""
        sealed = await self.inner.recv()
        ack = getattr(sealed, "ack", None)
        peer = self.remote_peer_id
        assert peer is not None
        resumed, self._resumed = self._resumed and ack is None, False
        try:
            frame, session, counter, sealed_at = self._sealer.open_frame(sealed, peer,
                                                                         resumed=resumed)
        except SealError:
            if ack is not None:
                ack()
            raise
        if self._sealer.file is None:
            return frame if ack is None else DeliveredFrame(frame, ack)
        if ack is None:  # a medium that never delivers it again: taken now
            self._sealer.taken(peer, session, counter, sealed_at)
            return frame
        # Remembered as taken when the node is done with it (and only then: one read
        # but not finished comes again after a restart, and must be taken then).
        return DeliveredFrame(frame, partial(self._sealer.taken, peer, session, counter,
                                             sealed_at, ack))

    async def close(self) -> None:
        """Close the inbox connection."""
        await self.inner.close()
