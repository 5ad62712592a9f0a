"""Each public package exports exactly the names it means to: nothing by accident, and
nothing disappears silently. Exceptions live in errors modules, with no two exported
exceptions of one name in different packages."""

from __future__ import annotations

import importlib
import inspect

import pytest

EXPORTS: dict[str, set[str]] = {
    "p2phost_sdk": {
    "AcceptHandler", "Allow", "AnnouncementError", "App", "Backoff", "CAPABILITIES",
    "CLOCK_SKEW", "Codec", "CodecError", "ConfigError", "ConfigField", "ConfigSchema",
    "Connection", "ConnectionClosed", "DeliveredFrame", "Delivery", "DeliveryError",
    "DeliveryMode", "Discovery", "DiscoveryEvents", "ENTRY_POINT_GROUP", "FIELD_TYPES",
    "FrameTooLarge", "HOST_API", "Handler", "HandshakeError", "HookSpecs", "Identity",
    "KINDS", "Listener", "MAX_ADDRESSES", "MAX_ADDRESS_LENGTH", "Message", "MessageKind",
    "Messenger", "P2PHostError", "PeerInfo", "PeerRecord", "PeerUnavailable",
    "PluginContext", "PluginMetadata", "PluginMetadataError", "PluginTimeout",
    "PresenceBook", "PresenceSigner", "PresenceTable", "REJECT_REASONS", "RejectLog",
    "RemoteError", "RequestTimeout", "SecureConnection", "Security", "SignedPresence",
    "Store", "TaskOwner", "BodyInvalid", "Contract", "MODEL_KINDS", "ModelError",
    "contract_of", "contract_of_handler", "to_builtins", "Transport", "TransportError",
    "allow", "cancel_and_wait",
    "check_announcement", "check_frame_size", "check_scope", "close_within", "handler",
    "hookimpl", "host_api_compatible", "is_peer_id", "is_valid_name", "is_wildcard",
    "link_addresses", "normalize_name", "parse_specifier", "peer_id_from_public_key",
    "permission_of", "plugin_name", "plugin_name_of", "plugin_payload", "presence_payload",
    "public_key_from_peer_id", "run_handshake", "verify", "with_host", "with_timeout",
    },
    "p2phost_sdk.inbox": {
    "Deliver", "ForeignRecord", "InboxConnection", "InboxFull", "InboxListener",
    "InboxOptions", "InboxTransport", "Letter", "LetterHandler", "Medium", "MediumAddress",
    "MediumError", "MediumRefused", "MediumUnavailable", "OVERHEAD", "Retention",
    "UnknownInbox", "backoff", "stop_if_cancelled", "valid_inbox",
    },
    "p2phost_sdk.testing": {
    "KITS", "Kit", "MemoryNetwork", "PipeConnection", "PluginUnderTest", "memory_pipe",
    },
    "p2phost_registry": {
    "Actor", "AuditEntry", "BadRequest", "Conflict", "DEFAULT_MAX_UPLOAD", "FileRecord",
    "Forbidden", "NotFound", "PayloadTooLarge", "PluginRecord", "PublishResult",
    "READY_LINE", "RegistryError", "SCHEMA_VERSION", "Store", "StoreError", "Unauthorized",
    "VersionRecord", "create_app", "serve",
    },
    "p2phost": {
    "App", "AsyncNode", "BlockingNode", "BodyInvalid", "Delivery", "HandlerError",
    "IdentityInUse", "LibraryError", "Message", "ModelError", "NodeClosed", "PeerInfo",
    "PeerUnavailable", "RemoteError", "RequestTimeout", "UserError", "__version__",
    "connect", "handler", "open_node",
    },
}


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_a_package_exports_exactly_its_intended_names(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPORTS[package]
    assert len(module.__all__) == len(set(module.__all__)), "a name exported twice"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but missing"
    public = {n for n, v in vars(module).items() if not n.startswith("_")
              and not inspect.ismodule(v) and n != "pytest_plugins"}
    assert public <= set(module.__all__), f"exported by accident: {public - EXPORTS[package]}"


def _exceptions(package: str) -> dict[str, type[BaseException]]:
    module = importlib.import_module(package)
    found = {}
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) and issubclass(value, BaseException):
            found[name] = value
    return found


def test_exceptions_are_defined_in_errors_modules() -> None:
    for package in ("p2phost_sdk", "p2phost_registry"):
        for name, exc in _exceptions(package).items():
            assert exc.__module__ == f"{package}._errors", f"{package}.{name} is defined " \
                f"in {exc.__module__}, not in {package}._errors"


def test_the_sdk_errors_docstring_draws_every_exception() -> None:
    tree = importlib.import_module("p2phost_sdk._errors").__doc__ or ""
    for package in ("p2phost_sdk", "p2phost_sdk.inbox"):
        for name in _exceptions(package):
            assert name in tree, f"{package}.{name} is not in the tree of p2phost_sdk._errors"


def test_no_two_exported_exceptions_share_a_name() -> None:
    seen: dict[str, tuple[str, type[BaseException]]] = {}
    for package in EXPORTS:
        for name, exc in _exceptions(package).items():
            # p2phost re-exports the SDK's errors a program catches: the same class is fine.
            assert name not in seen or seen[name][1] is exc, \
                f"{name} is exported by {seen[name][0]} and {package}"
            seen[name] = (package, exc)
