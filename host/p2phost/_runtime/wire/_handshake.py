"""The handshake: secure the connection (when a security plugin is loaded), then hello.

The dialler sends its HELLO frame at once; the listener reads it, checks it (peer id,
trust policy, host-api, codecs) and answers with its own HELLO, or with a GOODBYE naming
why it refuses (so a refusal reaches the dialler before the connection is open). The
exchange costs the dialler one round trip, as a simultaneous one would. The HELLO body is
JSON whatever the codecs (they are not agreed yet). The codec is the first one in the
*dialler's* list that the listener also has, so both ends pick the same one without
another round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.version import InvalidVersion, Version

from p2phost_sdk import (
    HOST_API,
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    Codec,
    Connection,
    HandshakeError,
    Identity,
    P2PHostError,
    RateLimitedLog,
    Security,
    is_peer_id,
)

from .._errors import ConnectionRefusedByPeer, PeerNotTrusted, Refused, WireError
from ._envelope import MAX_FIELD, Envelope, Kind, decode, encode, wire_name_problem
from ._refusal import Heard, goodbye_reason, peer_refused, said_during_security
from ._said import said

log = logging.getLogger("p2phost.node")
#: Hellos whose lists had entries left out. One for the process, not one per peer: a
#: peer can make up a new identity for every handshake, each a line of its own.
_left_out = RateLimitedLog(log, "hellos with entries left out")
_GOODBYE_GRACE = 0.5
#: The largest hello this node accepts (and the cap on frames before the handshake is
#: done when no security plugin is loaded): thousands of topics fit.
MAX_HELLO = 65536
#: The most topics, and codecs, taken from a peer's hello (each kept per peer, shown by
#: ``p2phost peers``); its listen addresses are bounded as a discovery announcement's are.
MAX_HELLO_TOPICS = 4096
MAX_HELLO_CODECS = 16
#: The trust policy: why to refuse a proven peer id (given its hello name once known),
#: or None to accept it.
Admit = Callable[[str, str | None], str | None]
#: The listener's room for a peer once its hello names it: why there is none (given the
#: peer id and whether the peer is a client), or None to take it.
Room = Callable[[str, bool], str | None]


@dataclass(frozen=True)
class Hello:
    """What a node says about itself when a connection opens."""

    peer_id: str
    codecs: tuple[str, ...]
    topics: tuple[str, ...] = ()
    listen: tuple[str, ...] = ()
    #: Random per node start: a new session on a known peer id means the peer restarted.
    session: str = ""
    #: Random per connection: with the dialler's peer id it names the connection, so both
    #: ends agree which of two duplicate connections to keep.
    nonce: str = ""
    name: str = ""
    host_api: str = str(HOST_API)
    max_frame_size: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_frame(self) -> bytes:
        """This hello as a HELLO frame."""
        body = {
            "peer_id": self.peer_id, "host_api": self.host_api, "codecs": list(self.codecs),
            "topics": list(self.topics), "listen": list(self.listen), "session": self.session,
            "nonce": self.nonce, "name": self.name, "max_frame_size": self.max_frame_size,
            **self.extra,
        }
        return encode(Kind.HELLO, 0, body=json.dumps(body).encode(),
                      content_type=b"application/json")

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> Hello:
        """Parse a HELLO; raises :class:`HandshakeError` naming the bad field."""
        try:
            data = json.loads(envelope.body)
        except ValueError as exc:
            raise HandshakeError(f"hello is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HandshakeError("hello is not a JSON object")

        left_out: list[str] = []

        def strings(key: str, usable: Callable[[str], bool], most: int,
                    what: str = "") -> tuple[str, ...]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise HandshakeError(f"hello field {key!r} is not a list of strings")
            # Left out, not cut: a topic cut short would name another topic.
            kept = tuple(v for v in value if usable(v))[:most]
            if len(kept) < len(value):
                left_out.append(f"{len(value) - len(kept)} of its {len(value)} {what or key}")
            return kept

        peer_id, host_api = data.get("peer_id"), data.get("host_api")
        if not isinstance(peer_id, str) or not is_peer_id(peer_id):
            raise HandshakeError(f"hello carries no valid peer id (got {peer_id!r})")
        if not isinstance(host_api, str):
            raise HandshakeError("hello carries no host_api version")
        max_frame = data.get("max_frame_size", 0)
        known = {"peer_id", "host_api", "codecs", "topics", "listen", "session", "nonce",
                 "name", "max_frame_size"}
        hello = cls(
            peer_id=peer_id, codecs=strings("codecs", _wire_name, MAX_HELLO_CODECS),
            topics=strings("topics", _wire_name, MAX_HELLO_TOPICS),
            listen=strings("listen", _address, MAX_ADDRESSES, "listen addresses"),
            session=said(str(data.get("session", ""))), nonce=said(str(data.get("nonce", ""))),
            name=said(str(data.get("name", ""))), host_api=said(host_api),
            max_frame_size=max_frame if isinstance(max_frame, int) else 0,
            extra={k: v for k, v in data.items() if k not in known},
        )
        if left_out:
            _left_out.warning("peer %s's hello: left out %s (a topic or codec is printable and "
                        "at most %d bytes, a listen address SCHEME://... of at most %d; "
                        "at most %d codecs, %d topics and %d addresses are taken)",
                        peer_id, ", ".join(left_out), MAX_FIELD, MAX_ADDRESS_LENGTH,
                        MAX_HELLO_CODECS, MAX_HELLO_TOPICS, MAX_ADDRESSES)
        return hello


def _wire_name(text: str) -> bool:
    """Whether a peer's topic or codec can be one: a printable line that fits an
    envelope's field (a longer one could never be sent)."""
    # (The character count first: a hello of 64 KiB encodes no long entry.)
    return len(text) <= MAX_FIELD and wire_name_problem(text) is None


def _address(text: str) -> bool:
    """Whether a peer's listen address is one a discovery announcement could carry."""
    return (len(text) <= MAX_ADDRESS_LENGTH and text.isprintable() and "://" in text
            and len(text.encode()) <= MAX_ADDRESS_LENGTH)


def announced(addresses: Sequence[str]) -> tuple[str, ...]:
    """What of this node's ``addresses`` its hello and presence records carry: what a peer
    takes (the first ``MAX_ADDRESSES`` of the usable ones). A record signed over more
    would be refused whole, by every peer, as malformed or as a bad signature."""
    return tuple(a for a in addresses if _address(a))[:MAX_ADDRESSES]


def choose_codec(dialler: Sequence[str], listener: Sequence[str]) -> str | None:
    """The first of the dialler's codecs that the listener also has."""
    theirs = set(listener)
    return next((c for c in dialler if c in theirs), None)


def _check_api(remote: str) -> None:
    try:
        major = Version(remote).major
    except InvalidVersion:
        raise HandshakeError(f"peer speaks host-api {remote!r}, not a version") from None
    if major != HOST_API.major:
        raise HandshakeError(f"peer speaks host-api {remote}, this node {HOST_API} "
                             "(major versions must match)")


@dataclass(frozen=True)
class Handshaken:
    """The result of a finished handshake."""

    connection: Connection
    hello: Hello
    codec: Codec
    #: The security protocol that secured the connection ("none": not secured).
    security: str = "none"


async def handshake(
    connection: Connection,
    *,
    hello: Hello,
    codecs: Mapping[str, Codec],
    identity: Identity,
    security: Security | None,
    initiator: bool,
    expected_peer_id: str | None,
    timeout: float,
    admit: Admit | None = None,
    client: bool = False,
    room: Room | None = None,
) -> Handshaken:
    """Run the whole handshake within ``timeout`` seconds.

    ``admit`` (the trust policy) is asked as soon as the channel proved the peer's id,
    before this node's hello goes out, and again with the peer's hello. A *client* (a
    short-lived ``p2phost send``/``ping`` node, said in its hello) may carry the peer id
    of the node it talks to: it runs in that node's project, with its key. ``room`` (the
    listener's peer limit) is asked with the dialler's checked hello, before this node's
    goes out: a peer with no room gets a GOODBYE and :class:`Refused` is raised.

    Until it is done, incoming frames on the raw connection are capped at the security
    plugin's largest handshake message (or the largest hello), so an unauthenticated
    peer cannot make the node buffer a large frame.

    On failure the connection is closed (after a best-effort GOODBYE naming the
    reason) and :class:`HandshakeError` is raised.
    """
    raw = connection
    raw.limit_incoming(pre_handshake_limit(security))
    try:
        async with asyncio.timeout(timeout):
            if security is not None:
                connection = await _secure(security, connection, identity=identity,
                                           initiator=initiator,
                                           expected_peer_id=expected_peer_id,
                                           timeout=timeout)
                _admit(admit, connection.remote_peer_id, None, identity)
            if initiator:
                await connection.send(hello.to_frame())
            frame = await connection.recv()
            ack = getattr(frame, "ack", None)
            if ack is not None:
                ack()
            envelope = decode(frame)
            if envelope.kind is Kind.GOODBYE:
                raise peer_refused(envelope.body)  # its words, cut there
            if envelope.kind is not Kind.HELLO:
                raise HandshakeError(f"expected a hello, got a {envelope.kind.name} frame")
            remote = Hello.from_envelope(envelope)
            own = client or remote.extra.get("client") is True
            _check_peer(remote.peer_id, connection, identity, expected_peer_id, own)
            _admit(admit, remote.peer_id, remote.name, identity)
            _check_api(remote.host_api)
            dialler, listener = (hello, remote) if initiator else (remote, hello)
            chosen = choose_codec(dialler.codecs, listener.codecs)
            if chosen is None:
                raise HandshakeError(  # (the peer's list cut as its words are)
                    f"no codec in common: the dialler offers {said(', '.join(dialler.codecs))}"
                    f", the listener has {said(', '.join(listener.codecs))}"
                )
            if not initiator:
                # The listener answers once it has checked the dialler's hello: a refusal
                # goes out as a GOODBYE in place of its HELLO, so the dialler counts a
                # refused dial (and backs off) instead of connecting, then losing the peer.
                if room is not None and (full := room(
                        remote.peer_id, remote.extra.get("client") is True)) is not None:
                    raise Refused(full)
                await connection.send(hello.to_frame())
            # (a Noise message's limit stays: its peer sends none larger)
            raw.limit_incoming(getattr(security, "max_transport_frame", None))
            return Handshaken(connection, remote, codecs[chosen],
                              security.protocol if security is not None else "none")
    except TimeoutError:
        await refuse(connection, f"handshake did not finish within {timeout:g}s")
        raise HandshakeError(f"handshake did not finish within {timeout:g}s") from None
    except (Refused, ConnectionRefusedByPeer, PeerNotTrusted) as exc:
        await refuse(connection, str(exc))
        raise  # as it is: callers count and explain a refusal by its kind, not its words
    except (HandshakeError, WireError) as exc:
        await refuse(connection, str(exc))
        raise HandshakeError(str(exc)) from exc
    except P2PHostError as exc:  # a transport error, or the security plugin's
        await connection.close()
        raise HandshakeError(str(exc)) from exc
    except BaseException:
        await connection.close()
        raise


async def _secure(security: Security, connection: Connection, *, identity: Identity,
                  initiator: bool, expected_peer_id: str | None,
                  timeout: float) -> Connection:
    """The security plugin's handshake; a failure on the peer's plaintext GOODBYE (a
    refusal at its admission, before it runs any security) is reported as what it said."""
    if not initiator:  # only a dialler is answered by a refusal before any security
        return await security.secure(connection, identity=identity, initiator=initiator,
                                     expected_peer_id=expected_peer_id, timeout=timeout)
    heard = Heard(connection)
    try:
        return await security.secure(connection, identity=identity, initiator=initiator,
                                     expected_peer_id=expected_peer_id, timeout=timeout)
    except P2PHostError as exc:
        reason = goodbye_reason(heard.last)
        if reason is None:
            raise
        raise said_during_security(reason, exc) from exc
    finally:
        heard.stop()


def pre_handshake_limit(security: Security | None) -> int:
    """The largest incoming frame before the handshake is done."""
    if security is None:
        return MAX_HELLO
    return max(int(getattr(security, "max_handshake_frame", MAX_HELLO)), MAX_HELLO)


def _check_peer(peer_id: str, connection: Connection, identity: Identity,
                expected: str | None, client: bool) -> None:
    proven = connection.remote_peer_id
    if proven is not None and proven != peer_id:
        raise HandshakeError(f"hello claims peer id {peer_id} but the channel proved {proven}")
    if expected is not None and expected != peer_id:
        raise HandshakeError(f"expected peer {expected}, reached {peer_id}")
    if peer_id == identity.peer_id and not client:
        raise HandshakeError("connected to itself (the address is this node's own)")


def _admit(admit: Admit | None, peer_id: str | None, name: str | None,
           identity: Identity) -> None:
    if admit is None or peer_id is None or peer_id == identity.peer_id:
        return  # our own key: a client of this very project
    reason = admit(peer_id, name)
    if reason is not None:
        raise PeerNotTrusted(peer_id, reason)


async def refuse(connection: Connection, reason: str) -> None:
    """Tell the peer why (so its log says it too), then close.

    Nothing is read from a refused peer, so nothing of what it sends may be held while
    the GOODBYE goes out: the cap of an unauthenticated peer's frames applies (a transport
    that assembles whole messages, websocket's, would otherwise take in one of 16 MiB).
    """
    connection.limit_incoming(MAX_HELLO)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_GOODBYE_GRACE):
            await connection.send(encode(Kind.GOODBYE, 0, body=reason.encode()))
    await connection.close()
