"""Exceptions shared by the host and plugins. Each carries a message a user can act on.

Every exception the SDK exports is here, ``p2phost_sdk.inbox``'s and
``p2phost_sdk.signing``'s included (marked "inbox" and "signing": exported from there
only)::

    Exception
    ├── P2PHostError                  every error p2phost raises on purpose
    │   ├── ConfigError               [config.NAME] does not match the plugin's schema
    │   ├── PluginMetadataError       [tool.p2phost.plugin] is missing or invalid
    │   ├── CodecError                a value cannot be encoded, or bytes decoded
    │   ├── TransportError            cannot listen, dial or move a frame
    │   │   ├── ConnectionClosed      no more frames will come on this connection
    │   │   │   └── ProtocolViolation the peer broke the protocol (tampered, malformed)
    │   │   ├── FrameTooLarge         a frame over the maximum
    │   │   ├── AddressError          (also a ValueError) an address is malformed: a usage error
    │   │   ├── MediumError           (inbox) a broker or database failed
    │   │   │   ├── MediumUnavailable (inbox) unreachable now: worth retrying
    │   │   │   ├── MediumRefused     (inbox) credentials, permissions: fix the config
    │   │   │   ├── InboxFull         (inbox) at its retention limit: not stored
    │   │   │   └── UnknownInbox      (inbox) no node has that inbox on the medium
    │   │   └── ForeignRecord         (inbox) bytes on an inbox that are no p2phost record
    │   ├── HandshakeError            a peer did not prove who it is
    │   ├── RemoteError               the remote handler raised (carries its message)
    │   ├── PeerUnavailable           the peer is unknown or unreachable
    │   ├── RequestTimeout            (also a TimeoutError) no reply in time
    │   ├── PluginTimeout             (also a TimeoutError) a plugin hung; names it
    │   ├── SignatureFormatError      (signing) a publisher key or signature is malformed
    │   ├── DeliveryError             (also a ValueError) a delivery declaration is wrong
    │   ├── ModelError                (also a TypeError) handler(model=) of an unknown kind
    │   └── BodyInvalid               (also a ValueError) a body does not fit its model
    └── ValueError
        └── AnnouncementError         a discovery announcement is malformed or hostile
"""

from __future__ import annotations


class P2PHostError(Exception):
    """Base of every error p2phost raises on purpose."""


class ConfigError(P2PHostError):
    """A plugin's ``[config.NAME]`` table does not match its schema."""

    def __init__(self, plugin: str, field: str, expected: str, got: object) -> None:
        self.plugin, self.field, self.expected, self.got = plugin, field, expected, got
        super().__init__(
            f"[config.{plugin}] {field}: expected {expected}, got {got!r}"
        )


class PluginMetadataError(P2PHostError):
    """A plugin's ``[tool.p2phost.plugin]`` metadata is missing or invalid."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        super().__init__(f"{source}: invalid p2phost plugin metadata: " + "; ".join(problems))


class CodecError(P2PHostError):
    """A value could not be encoded, or bytes could not be decoded."""


class TransportError(P2PHostError):
    """A transport could not listen, dial or move a frame."""


class ConnectionClosed(TransportError):
    """The connection was closed; no more frames will arrive on it."""


class ProtocolViolation(ConnectionClosed):
    """The peer sent what the protocol forbids (a message that fails authentication, a
    malformed record), so the connection was closed. The host logs it as a warning: a
    peer misbehaving or an attack on the path, not a connection that merely ended."""


class FrameTooLarge(TransportError):
    """A frame is larger than the configured maximum; ``fix`` says what to do about it
    when the raiser knows (whose limit it is), else empty."""

    def __init__(self, *args: object, fix: str = "") -> None:
        self.fix = fix
        super().__init__(*args)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} (fix: {self.fix})" if self.fix else text


class AddressError(TransportError, ValueError):
    """An address is malformed for its transport: no dial or retry can succeed, so the
    host reports it as a usage error (exit 2), naming the form ``expected``."""

    def __init__(self, address: str, problem: str, *, expected: str) -> None:
        self.address, self.problem, self.expected = address, problem, expected
        super().__init__(f"bad address {address!r}: {problem}")


class MediumError(TransportError):
    """An inbox transport's medium (broker, database) failed; the message says what and
    how to fix it."""


class MediumUnavailable(MediumError):
    """The medium cannot be reached right now (down, connection lost): worth retrying."""


class MediumRefused(MediumError):
    """The medium refused us (credentials, permissions, no such database): retrying is
    useless until the configuration changes."""


class InboxFull(MediumError):
    """The inbox appended to is at its retention limit: the records were not stored."""


class UnknownInbox(MediumError):
    """The inbox appended to does not exist: no node with that peer id uses this medium."""


class ForeignRecord(TransportError):
    """Bytes on an inbox that are not a p2phost record (or not one this version reads)."""


class HandshakeError(P2PHostError):
    """A peer did not complete the handshake, or could not prove its identity."""


class SignatureFormatError(P2PHostError):
    """A publisher key or signature document is malformed (not merely wrong)."""


class DeliveryError(P2PHostError, ValueError):
    """A delivery declaration (an app's or ``[delivery.TOPIC]``'s) is not valid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


#: Why announcements are dropped: the counters of :class:`RejectLog` and ``p2phost peers``.
REJECT_REASONS = ("malformed", "bad signature", "expired", "stale")


class AnnouncementError(ValueError):
    """An announcement from the network is malformed or hostile; ignore it.

    A message starting with one of :data:`REJECT_REASONS` is counted under that reason,
    any other under ``malformed``.
    """

    @property
    def reason(self) -> str:
        """The counter this rejection belongs under."""
        text = str(self)
        return next((r for r in REJECT_REASONS if text.startswith(r)), "malformed")


class RemoteError(P2PHostError):
    """A request's handler on the remote peer raised; carries the remote message."""

    def __init__(self, peer: str, topic: str, message: str) -> None:
        self.peer, self.topic, self.remote_message = peer, topic, message
        super().__init__(f"{topic!r} handler on {peer} failed: {message}")


class RequestTimeout(P2PHostError, TimeoutError):
    """A request got no reply before its deadline."""


class PeerUnavailable(P2PHostError):
    """A message could not be delivered because the peer is unknown or unreachable."""


class PluginTimeout(P2PHostError, TimeoutError):
    """A plugin did not finish something (listen, open an inbox, close, start or stop
    discovery) within its bound; names the plugin, so a hung broker is found at once."""

    def __init__(self, plugin: str, doing: str, timeout: float, *, fix: str = "") -> None:
        self.plugin, self.doing, self.timeout, self.fix = plugin, doing, timeout, fix
        text = f"{plugin} did not finish {doing} within {timeout:g}s"
        super().__init__(f"{text} (fix: {fix})" if fix else text)


class ModelError(P2PHostError, TypeError):
    """A ``model=`` is not a kind the SDK knows (a dataclass, msgspec Struct or pydantic
    model), or the library that converts it is not installed."""


class BodyInvalid(P2PHostError, ValueError):
    """A message body does not fit its handler's model; names the field path."""

    def __init__(self, topic: str, model: str, detail: str, *, reply: bool = False) -> None:
        self.topic, self.model, self.detail, self.reply = topic, model, detail, reply
        what = f"the reply to a {topic!r} request" if reply else \
            f"the body of a {topic!r} message"
        super().__init__(f"{what} does not fit {model}: {detail}")
