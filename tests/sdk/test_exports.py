"""Each public package exports exactly the names it means to: nothing by accident, and
nothing disappears silently. Exceptions live in errors modules, with no two exported
exceptions of one name in different packages."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

EXPORTS: dict[str, set[str]] = {
    "p2phost_sdk": {
    "AcceptHandler", "AddressError", "Allow", "AnnouncementError", "App", "Backoff", "CAPABILITIES",
    "CLOCK_SKEW", "Codec", "CodecError", "ConfigError", "ConfigField", "ConfigSchema",
    "Connection", "ConnectionClosed", "DeliveredFrame", "Delivery", "DeliveryError",
    "DeliveryMode", "Discovery", "DiscoveryEvents", "ENTRY_POINT_GROUP", "FIELD_TYPES",
    "FrameSink", "FrameTooLarge", "HOST_API", "Handler", "HandshakeError", "HookSpecs",
    "Identity", "KINDS", "LayeredConnection", "Listener", "MAX_ADDRESSES", "MAX_ADDRESS_LENGTH",
    "Message", "MessageKind",
    "Messenger", "PLUGGY_PROJECT_NAME", "P2PHostError", "PeerInfo", "PeerRecord", "PeerUnavailable",
    "PluginContext", "PluginMetadata", "PluginMetadataError", "PluginTimeout",
    "ProtocolViolation",
    "PresenceBook", "PresenceSigner", "PresenceTable", "RAW_CONTENT_TYPE", "RateLimitedLog",
    "Raw", "REJECT_REASONS", "RejectLog",
    "RemoteError", "RequestTimeout", "SecureConnection", "Security", "SignedPresence",
    "Store", "TaskOwner", "TraceContext", "BodyInvalid", "Contract", "MODEL_KINDS", "ModelError",
    "contract_of", "contract_of_handler", "to_builtins", "Transport", "TransportError",
    "allow", "cancel_and_wait",
    "check_announcement", "check_frame_size", "check_scope", "close_within",
    "format_host_port", "handler",
    "hookimpl", "host_api_compatible", "ipv6_bracketed", "is_peer_id", "is_valid_name",
    "is_wildcard",
    "link_addresses", "normalize_name", "parse_host_port", "parse_specifier",
    "peer_id_from_public_key",
    "permission_of", "plugin_name", "plugin_name_of", "plugin_payload", "port_problem",
    "presence_payload",
    "public_key_from_peer_id", "run_handshake", "verify", "with_host", "with_timeout",
    },
    "p2phost_sdk.core_metadata": {"header_values"},
    "p2phost_sdk.inbox": {
    "COPIES_HELD", "Deliver", "ForeignRecord", "InboxConnection", "InboxFull", "InboxListener",
    "InboxOptions", "InboxTransport", "JournalFile", "Letter", "LetterHandler", "Medium",
    "MediumAddress", "MediumError", "MediumRefused", "MediumUnavailable", "OVERHEAD", "Retention",
    "UnknownInbox", "backoff", "is_credit", "stop_if_cancelled", "valid_inbox",
    },
    "p2phost_sdk.signing": {
    "FORMAT", "KEY_PROOF_DOMAIN", "MAX_SIGNATURE_SIZE", "PluginSignature",
    "SignatureFormatError", "format_publisher_key", "key_proof_message",
    "parse_publisher_key", "signed_message", "verify_with_key",
    },
    "p2phost_sdk.testing": {
    "KITS", "Kit", "MemoryNetwork", "PipeConnection", "PluginUnderTest", "memory_pipe",
    },
    "p2phost_registry": {
    "Actor", "AuditEntry", "BadRequest", "Conflict", "DEFAULT_MAX_UPLOAD", "FileRecord",
    "Forbidden", "ListenFailed", "NotFound", "PayloadTooLarge", "PluginRecord", "PublishResult",
    "READY_LINE", "RegistryError", "SCHEMA_VERSION", "SeedResult", "Store", "StoreError",
    "Unauthorized", "VersionRecord", "create_app", "is_store", "plugin_projects", "seed",
    "serve",
    },
    "p2phost": {
    "App", "AsyncNode", "BlockingNode", "BodyInvalid", "CodecMissing",
    "ConnectionRefusedByPeer", "Delivery",
    "HandlerError", "IdentityInUse", "LibraryError", "Message", "ModelError", "NodeClosed",
    "PeerInfo", "PeerNotTrusted", "PeerUnavailable", "ProjectNotFound", "RemoteError",
    "RequestTimeout",
    "UserError", "__version__",
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


ERRORS_MODULES = {"p2phost_sdk": "p2phost_sdk._errors",
                  "p2phost_sdk.inbox": "p2phost_sdk._errors",
                  "p2phost_sdk.signing": "p2phost_sdk._errors",
                  "p2phost_registry": "p2phost_registry._errors"}


@pytest.mark.parametrize("package", sorted(ERRORS_MODULES))
def test_exceptions_are_defined_in_errors_modules(package: str) -> None:
    errors = ERRORS_MODULES[package]
    for name, exc in _exceptions(package).items():
        assert exc.__module__ == errors, f"{package}.{name} is defined in " \
            f"{exc.__module__}, not in {errors}"


@pytest.mark.parametrize("errors", sorted(set(ERRORS_MODULES.values())))
def test_an_errors_module_draws_every_exception_it_defines(errors: str) -> None:
    module = importlib.import_module(errors)
    tree = module.__doc__ or ""
    defined = [name for name, value in vars(module).items() if inspect.isclass(value)
               and issubclass(value, BaseException) and value.__module__ == errors]
    assert defined
    for name in defined:
        assert f" {name} " in tree, f"{name} is not drawn in the tree of {errors}"


@pytest.mark.parametrize("package", ["p2phost_sdk", "p2phost_registry"])
def test_a_package_defines_exceptions_only_in_its_errors_module(package: str) -> None:
    root = importlib.import_module(package)
    errors = ERRORS_MODULES[package]
    for path in sorted(Path(root.__file__ or "").parent.rglob("*.py")):
        name = ".".join((package, *path.relative_to(Path(root.__file__ or "").parent)
                         .with_suffix("").parts)).removesuffix(".__init__")
        if name == errors:
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException):
                assert value.__module__ != name, f"{name} defines {value.__name__}: move it " \
                    f"to {errors}"


def test_no_two_exported_exceptions_share_a_name() -> None:
    seen: dict[str, tuple[str, type[BaseException]]] = {}
    for package in EXPORTS:
        for name, exc in _exceptions(package).items():
            # p2phost re-exports the SDK's errors a program catches: the same class is fine.
            assert name not in seen or seen[name][1] is exc, \
                f"{name} is exported by {seen[name][0]} and {package}"
            seen[name] = (package, exc)


def test_the_sdk_root_loads_each_name_from_the_module_type_checkers_are_told() -> None:
    """``p2phost_sdk`` imports its names on first use (PEP 562); type checkers read the
    ``if TYPE_CHECKING:`` imports instead. Both must say the same."""
    import ast

    import p2phost_sdk

    tree = ast.parse(Path(p2phost_sdk.__file__ or "").read_text())
    told: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING") \
                and not isinstance(node.test, ast.UnaryOp):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                told["." + (imp.module or "")] = tuple(a.name for a in imp.names)
    loaded = p2phost_sdk._DEFINED_IN  # type: ignore[attr-defined]
    assert {m: set(n) for m, n in told.items()} == {m: set(n) for m, n in loaded.items()}
    assert {n for names in told.values() for n in names} == set(p2phost_sdk.__all__)
    for module, names in loaded.items():
        defined = importlib.import_module(module, "p2phost_sdk")
        for name in names:
            assert getattr(p2phost_sdk, name) is getattr(defined, name)


def test_light_sdk_names_do_not_load_the_runtime() -> None:
    """What the installer and the CLI take from the SDK loads neither asyncio, pluggy nor
    the crypto libraries (a node's, not an install's, cost)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from p2phost_sdk import (P2PHostError, is_peer_id, is_valid_name, "
            "normalize_name, parse_specifier, plugin_name_of, PluginMetadata, HOST_API)\n"
            "from p2phost_sdk.signing import PluginSignature, parse_publisher_key\n"
            "from p2phost_sdk.core_metadata import header_values\n"
            "print(sorted(m for m in ('asyncio', 'pluggy', 'cryptography') "
            "if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


#: The SDK names HOST_API 1.1 added (docs/plugin-authoring.md, "The host API version"):
#: a plugin importing one fails to load on a 1.0 host, so it must not claim 1.0.
ADDED_IN_1_1 = {"ProtocolViolation", "TraceContext", "parse_host_port", "format_host_port",
                "port_problem", "ipv6_bracketed", "PLUGGY_PROJECT_NAME"}


def test_an_official_plugin_importing_a_1_1_name_declares_host_api_1_1() -> None:
    import ast
    import tomllib

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    from tests.conftest import OFFICIAL

    wrong = []
    for project in sorted(OFFICIAL.glob("*/pyproject.toml")):
        used = {alias.name for source in project.parent.glob("src/**/*.py")
                for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module == "p2phost_sdk"
                for alias in node.names} & ADDED_IN_1_1
        data = tomllib.loads(project.read_text())
        host_api = data["tool"]["p2phost"]["plugin"]["host-api"]
        sdk = next(Requirement(d) for d in data["project"]["dependencies"]
                   if Requirement(d).name == "p2phost-sdk")
        if used and ("1.0" in SpecifierSet(host_api) or "1.0" in sdk.specifier):
            wrong.append(f"{project.parent.name} imports {sorted(used)} but declares "
                         f"host-api {host_api!r}, {str(sdk)!r}")
    assert not wrong, "fix: declare host-api >=1.1,<2 and p2phost-sdk>=1.1,<2 in: " \
        + "; ".join(wrong)
