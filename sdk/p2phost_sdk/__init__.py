"""The p2phost SDK: everything a plugin imports.

Plugins import only this package (never ``p2phost`` itself). It defines the plugin
kinds (:class:`Transport`, :class:`Discovery`, :class:`Codec`, :class:`Security`,
:class:`App`), the host's hooks and the :data:`hookimpl` marker, plugin metadata,
config schemas, identities, the errors shared with the host, and ``HOST_API``.
Conformance kits for each kind live in :mod:`p2phost_sdk.testing`.
"""

from ._aio import (
    Backoff,
    TaskOwner,
    cancel_and_wait,
    close_within,
    plugin_name,
    with_timeout,
)
from ._app import App, Handler, Message, MessageKind, Messenger, PeerInfo, handler
from ._authorization import Allow, allow, permission_of
from ._codec import Codec
from ._config import FIELD_TYPES, ConfigField, ConfigSchema
from ._context import PluginContext
from ._delivery import Delivery, DeliveryMode, Store
from ._discovery import Discovery, DiscoveryEvents, PeerRecord
from ._errors import (
    REJECT_REASONS,
    AnnouncementError,
    CodecError,
    ConfigError,
    ConnectionClosed,
    DeliveryError,
    FrameTooLarge,
    HandshakeError,
    P2PHostError,
    PeerUnavailable,
    PluginMetadataError,
    PluginTimeout,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from ._hooks import ENTRY_POINT_GROUP, HookSpecs, hookimpl
from ._identity import (
    Identity,
    is_peer_id,
    peer_id_from_public_key,
    plugin_payload,
    public_key_from_peer_id,
    verify,
)
from ._metadata import (
    CAPABILITIES,
    KINDS,
    PluginMetadata,
    is_valid_name,
    normalize_name,
    parse_specifier,
    plugin_name_of,
)
from ._presence import (
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    PresenceTable,
    RejectLog,
    check_announcement,
    check_scope,
    is_wildcard,
    link_addresses,
    with_host,
)
from ._security import SecureConnection, Security, run_handshake
from ._signed import CLOCK_SKEW, PresenceBook, PresenceSigner, SignedPresence, presence_payload
from ._transport import (
    AcceptHandler,
    Connection,
    DeliveredFrame,
    Listener,
    Transport,
    check_frame_size,
)
from ._version import HOST_API, host_api_compatible

__all__ = [
    "CAPABILITIES",
    "CLOCK_SKEW",
    "ENTRY_POINT_GROUP",
    "FIELD_TYPES",
    "HOST_API",
    "KINDS",
    "MAX_ADDRESSES",
    "MAX_ADDRESS_LENGTH",
    "REJECT_REASONS",
    "AcceptHandler",
    "Allow",
    "AnnouncementError",
    "App",
    "Backoff",
    "Codec",
    "CodecError",
    "ConfigError",
    "ConfigField",
    "ConfigSchema",
    "Connection",
    "ConnectionClosed",
    "DeliveredFrame",
    "Delivery",
    "DeliveryError",
    "DeliveryMode",
    "Discovery",
    "DiscoveryEvents",
    "FrameTooLarge",
    "Handler",
    "HandshakeError",
    "HookSpecs",
    "Identity",
    "Listener",
    "Message",
    "MessageKind",
    "Messenger",
    "P2PHostError",
    "PeerInfo",
    "PeerRecord",
    "PeerUnavailable",
    "PluginContext",
    "PluginMetadata",
    "PluginMetadataError",
    "PluginTimeout",
    "PresenceBook",
    "PresenceSigner",
    "PresenceTable",
    "RejectLog",
    "RemoteError",
    "RequestTimeout",
    "SecureConnection",
    "Security",
    "SignedPresence",
    "Store",
    "TaskOwner",
    "Transport",
    "TransportError",
    "allow",
    "cancel_and_wait",
    "check_announcement",
    "check_frame_size",
    "check_scope",
    "close_within",
    "handler",
    "hookimpl",
    "host_api_compatible",
    "is_peer_id",
    "is_valid_name",
    "is_wildcard",
    "link_addresses",
    "normalize_name",
    "parse_specifier",
    "peer_id_from_public_key",
    "permission_of",
    "plugin_name",
    "plugin_name_of",
    "plugin_payload",
    "presence_payload",
    "public_key_from_peer_id",
    "run_handshake",
    "verify",
    "with_host",
    "with_timeout",
]
