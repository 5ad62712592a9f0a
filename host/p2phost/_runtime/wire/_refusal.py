"""A peer's refusal heard where a security handshake expected its message.

A listener refuses a connection at admission (its ``[node] peer-limit``, too many
handshakes in progress) before any security handshake starts: its GOODBYE goes out in
plaintext at once (docs/wire.md, section 3). A dialler with a security plugin reads that
frame as the peer's next handshake message, and its plugin fails ("a handshake message
failed authentication"), which would read as a security mismatch. The host hands the raw
connection to the plugin, so it hears the frames the plugin reads: when the plugin fails
and the last of them is a well-formed GOODBYE envelope, the dialler reports the refusal
and its reason instead. Security plugins need no change, and the bytes on the wire are
those of every node before.
"""

from __future__ import annotations

import re
from typing import Any

from p2phost_sdk import Connection, HandshakeError

from .._errors import ConnectionRefusedByPeer, RefusalCode, WireError
from ._envelope import Kind, decode
from ._said import said

#: A listener's refusal reasons at admission (``Connections``, ``HandshakeGate``): its
#: words, which :func:`refusal_code` reads back on the dialler.
PEER_LIMIT = "peer limit reached"
BUSY = "too many handshakes in progress"
#: The words of a peer's trust policy refusing this node (``PeerNotTrusted`` there):
#: its own up to the reason, which may quote this node's hello (its name).
_UNTRUSTED = re.compile(r"peer \S+ is refused by the trust policy: ")
#: Words of a peer's GOODBYE when it read this node's security handshake as its hello:
#: it runs no security plugin (a mismatch, not a refusal).
_READ_AS_HELLO = ("envelope", "hello", "frame of ")
#: What the dialler's operator can do about a refusal, by its code.
_FIXES: dict[RefusalCode, str] = {
    "peer-limit": "the refusing node is full: its operator raises peer-limit under [node] in "
                  "its p2phost.toml, or fewer peers connect to it",
    "busy-from-source": "wait and retry (connections still in their handshake from this "
                        "address end within seconds); if many peers share this address (NAT, "
                        "one host), the refusing node's operator raises "
                        "handshake-limit-per-source under [node] in its p2phost.toml",
    "busy": "wait and retry: the refusing node has too many connections in their handshake",
}


def goodbye_reason(frame: bytes | None) -> str | None:
    """The reason of ``frame`` when it is a well-formed plaintext GOODBYE envelope (ids,
    deadline and strings empty, a UTF-8 body), else None. A security handshake message
    (random keys, ciphertext) is never one but by a chance of far less than 2**-200."""
    if frame is None:
        return None
    try:
        envelope = decode(bytes(frame))
    except WireError:
        return None
    if envelope.kind is not Kind.GOODBYE or envelope.message_id or envelope.correlation_id \
            or envelope.deadline or envelope.topic or envelope.sender or envelope.recipient \
            or envelope.content_type or envelope.trace:
        return None
    try:
        return bytes(envelope.body).decode()
    except UnicodeDecodeError:
        return None


def refusal_code(words: str) -> RefusalCode | None:
    """What a peer's GOODBYE says, when it is one of the refusals this node knows (None:
    another reason). The wire carries a GOODBYE's reason as words only, so they are read
    here, once, where a GOODBYE is heard; everything after goes by the code. Each is
    the start of the words (the rest may quote what this node said: its name)."""
    if words.startswith(PEER_LIMIT):
        return "peer-limit"
    if words.startswith(f"{BUSY} from "):
        return "busy-from-source"
    if words.startswith(BUSY):
        return "busy"
    if _UNTRUSTED.match(words):
        return "untrusted"
    return None


def peer_refused(reason: str | bytes) -> ConnectionRefusedByPeer:
    """The dialler's error for a listener's GOODBYE in place of its HELLO: the reason
    (the GOODBYE's body, or its text: cut by :func:`said` here), what it is, and the fix
    that fits it."""
    reason = said(reason)
    code = refusal_code(reason)
    return ConnectionRefusedByPeer(reason, code, _FIXES.get(code) if code else None)


def refused_after_hellos(words: str) -> ConnectionRefusedByPeer | None:
    """The refusal a peer's GOODBYE right after the hellos is (its trust policy, or an
    older listener's peer limit, checked after its hello went out), or None: a goodbye
    for another reason."""
    words = said(words)
    code = refusal_code(words)
    return None if code is None else ConnectionRefusedByPeer(words, code, _FIXES.get(code))


def said_during_security(reason: str, failure: Exception) -> HandshakeError:
    """The dialler's error when the peer's GOODBYE ended this node's security handshake:
    a refusal, or, when the peer complains about a hello or an envelope, a peer that
    read the security handshake as plaintext frames (it runs no security plugin)."""
    if any(words in reason for words in _READ_AS_HELLO):
        return HandshakeError(f"{failure}; the peer answered in plaintext: "
                              f"{said(reason)}")
    return peer_refused(reason)


class Heard:
    """The last frame received on a raw connection while a security plugin runs its
    handshake on it.

    It shadows the connection's ``recv`` and ``recv_many`` with attributes of the
    instance for the handshake only, and deletes them after: a wrapper handed to the
    plugin would stay under the secured connection for its life, and every frame would
    pay a call more. It sets and deletes them, never reads the instance's ``__dict__``
    (``vars``): CPython keeps an object's attributes inline until something asks for its
    dict, and reads them the slow way for the object's life after. (The two names join
    the class's shared attribute keys, so CPython 3.11 stops specialising calls of them
    on that class: a connection in push mode makes none per frame.) A ``recv`` the
    instance had of its own (a wrapper's, set in its ``__init__``) is set back, not
    deleted. A connection that takes no instance attributes (``__slots__``) is not heard
    (the plugin's own error stands).
    """

    def __init__(self, connection: Connection) -> None:
        self.last: bytes | None = None
        self._connection: Connection | None = None
        recv, recv_many = connection.recv, connection.recv_many

        async def heard_recv() -> bytes:
            frame = await recv()
            self.last = frame
            return frame

        async def heard_recv_many() -> list[bytes]:
            frames = await recv_many()
            if frames:
                self.last = frames[-1]
            return frames

        # What to put back: None for the class's method (the attribute is deleted).
        self._previous = (_own(connection, "recv", recv),
                          _own(connection, "recv_many", recv_many))
        try:
            connection.recv = heard_recv  # type: ignore[method-assign]
            connection.recv_many = heard_recv_many  # type: ignore[method-assign]
        except AttributeError:  # __slots__: nothing to shadow
            return
        self._connection = connection

    def stop(self) -> None:
        """Put the connection's own ``recv`` and ``recv_many`` back."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        for name, previous in zip(("recv", "recv_many"), self._previous, strict=True):
            if previous is None:
                delattr(connection, name)
            else:
                setattr(connection, name, previous)


def _own(connection: Connection, name: str, bound: Any) -> Any:
    """``bound`` (``connection``'s ``name``) when the instance has it of its own, None
    when it is the class's method (told without reading the instance's ``__dict__``)."""
    if getattr(bound, "__self__", None) is connection \
            and getattr(bound, "__func__", None) is getattr(type(connection), name, None):
        return None
    return bound
