"""The p2phost SDK: everything a plugin imports.

Plugins import only this package (never ``p2phost`` itself). It defines the plugin
kinds (:class:`Transport`, :class:`Discovery`, :class:`Codec`, :class:`Security`,
:class:`App`), the host's hooks and the :data:`hookimpl` marker, plugin metadata,
config schemas, identities, the errors shared with the host, and ``HOST_API``.
Conformance kits for each kind live in :mod:`p2phost_sdk.testing`.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:  # what type checkers and IDEs read; at run time, __getattr__ below
    from ._address import format_host_port, ipv6_bracketed, parse_host_port, port_problem
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
        AddressError,
        AnnouncementError,
        BodyInvalid,
        CodecError,
        ConfigError,
        ConnectionClosed,
        DeliveryError,
        FrameTooLarge,
        HandshakeError,
        ModelError,
        P2PHostError,
        PeerUnavailable,
        PluginMetadataError,
        PluginTimeout,
        ProtocolViolation,
        RemoteError,
        RequestTimeout,
        TransportError,
    )
    from ._hooks import HookSpecs, hookimpl
    from ._identity import Identity, plugin_payload, verify
    from ._metadata import (
        CAPABILITIES,
        KINDS,
        PluginMetadata,
        is_valid_name,
        normalize_name,
        parse_specifier,
        plugin_name_of,
    )
    from ._models import MODEL_KINDS, Contract, contract_of, contract_of_handler, to_builtins
    from ._names import ENTRY_POINT_GROUP, PLUGGY_PROJECT_NAME
    from ._peer_ids import is_peer_id, peer_id_from_public_key, public_key_from_peer_id
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
    from ._ratelog import RateLimitedLog
    from ._raw import RAW_CONTENT_TYPE, Raw
    from ._security import LayeredConnection, SecureConnection, Security, run_handshake
    from ._signed import CLOCK_SKEW, PresenceBook, PresenceSigner, SignedPresence, presence_payload
    from ._trace import TraceContext
    from ._transport import (
        AcceptHandler,
        Connection,
        DeliveredFrame,
        FrameSink,
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
    "MODEL_KINDS",
    "PLUGGY_PROJECT_NAME",
    "RAW_CONTENT_TYPE",
    "REJECT_REASONS",
    "AcceptHandler",
    "AddressError",
    "Allow",
    "AnnouncementError",
    "App",
    "Backoff",
    "BodyInvalid",
    "Codec",
    "CodecError",
    "ConfigError",
    "ConfigField",
    "ConfigSchema",
    "Connection",
    "ConnectionClosed",
    "Contract",
    "DeliveredFrame",
    "Delivery",
    "DeliveryError",
    "DeliveryMode",
    "Discovery",
    "DiscoveryEvents",
    "FrameSink",
    "FrameTooLarge",
    "Handler",
    "HandshakeError",
    "HookSpecs",
    "Identity",
    "LayeredConnection",
    "Listener",
    "Message",
    "MessageKind",
    "Messenger",
    "ModelError",
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
    "ProtocolViolation",
    "RateLimitedLog",
    "Raw",
    "RejectLog",
    "RemoteError",
    "RequestTimeout",
    "SecureConnection",
    "Security",
    "SignedPresence",
    "Store",
    "TaskOwner",
    "TraceContext",
    "Transport",
    "TransportError",
    "allow",
    "cancel_and_wait",
    "check_announcement",
    "check_frame_size",
    "check_scope",
    "close_within",
    "contract_of",
    "contract_of_handler",
    "format_host_port",
    "handler",
    "hookimpl",
    "host_api_compatible",
    "ipv6_bracketed",
    "is_peer_id",
    "is_valid_name",
    "is_wildcard",
    "link_addresses",
    "normalize_name",
    "parse_host_port",
    "parse_specifier",
    "peer_id_from_public_key",
    "permission_of",
    "plugin_name",
    "plugin_name_of",
    "plugin_payload",
    "port_problem",
    "presence_payload",
    "public_key_from_peer_id",
    "run_handshake",
    "to_builtins",
    "verify",
    "with_host",
    "with_timeout",
]

#: The private module that defines each public name (the imports above, as data;
#: tests/sdk/test_exports.py checks that the two agree).
_DEFINED_IN: dict[str, tuple[str, ...]] = {
    "._address": ("format_host_port", "ipv6_bracketed", "parse_host_port", "port_problem"),
    "._aio": ("Backoff", "TaskOwner", "cancel_and_wait", "close_within", "plugin_name",
        "with_timeout"),
    "._app": ("App", "Handler", "Message", "MessageKind", "Messenger", "PeerInfo", "handler"),
    "._authorization": ("Allow", "allow", "permission_of"),
    "._codec": ("Codec",),
    "._config": ("FIELD_TYPES", "ConfigField", "ConfigSchema"),
    "._context": ("PluginContext",),
    "._delivery": ("Delivery", "DeliveryMode", "Store"),
    "._discovery": ("Discovery", "DiscoveryEvents", "PeerRecord"),
    "._errors": ("REJECT_REASONS", "AddressError", "AnnouncementError", "BodyInvalid",
        "CodecError", "ConfigError", "ConnectionClosed", "DeliveryError", "FrameTooLarge",
        "HandshakeError", "ModelError", "P2PHostError", "PeerUnavailable", "PluginMetadataError",
        "PluginTimeout", "ProtocolViolation", "RemoteError", "RequestTimeout", "TransportError"),
    "._hooks": ("HookSpecs", "hookimpl"),
    "._identity": ("Identity", "plugin_payload", "verify"),
    "._metadata": ("CAPABILITIES", "KINDS", "PluginMetadata", "is_valid_name", "normalize_name",
        "parse_specifier", "plugin_name_of"),
    "._names": ("ENTRY_POINT_GROUP", "PLUGGY_PROJECT_NAME"),
    "._peer_ids": ("is_peer_id", "peer_id_from_public_key", "public_key_from_peer_id"),
    "._models": ("MODEL_KINDS", "Contract", "contract_of", "contract_of_handler", "to_builtins"),
    "._presence": ("MAX_ADDRESS_LENGTH", "MAX_ADDRESSES", "PresenceTable", "RejectLog",
        "check_announcement", "check_scope", "is_wildcard", "link_addresses", "with_host"),
    "._ratelog": ("RateLimitedLog",),
    "._raw": ("RAW_CONTENT_TYPE", "Raw"),
    "._security": ("LayeredConnection", "SecureConnection", "Security", "run_handshake"),
    "._signed": ("CLOCK_SKEW", "PresenceBook", "PresenceSigner", "SignedPresence",
        "presence_payload"),
    "._trace": ("TraceContext",),
    "._transport": ("AcceptHandler", "Connection", "DeliveredFrame", "FrameSink", "Listener",
        "Transport", "check_frame_size"),
    "._version": ("HOST_API", "host_api_compatible"),
}
_MODULE_OF = {name: module for module, names in _DEFINED_IN.items() for name in names}

# Hidden from type checkers (they read the imports above), so that a misspelt name stays an
# error there rather than an ``object`` from ``__getattr__``.
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        # PEP 562: a name is imported from its module on first use, so ``from p2phost_sdk
        # import normalize_name`` (the installer, the CLI) does not load asyncio, pluggy and
        # the crypto libraries that only a running node needs.
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(module, __name__), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
