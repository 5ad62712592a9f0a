"""The plugin installer: resolve from registries, download and verify, switch atomically.

Imported only by the ``plugin`` commands that need it, so the CLI starts fast.
"""

from ._builtin import BUILTIN_SOURCE, BuiltinSource
from ._cache import DownloadCache, default_cache_dir
from ._errors import InstallError, IntegrityError, RegistryError, ResolutionError, UnknownPlugin
from ._http import Fetcher
from ._installer import Installer
from ._plan import Change, Plan, default_specifier
from ._registry import (
    PluginInfo,
    RegistryClient,
    Release,
    RemoteFile,
    plugin_sources,
    registry_urls,
)
from ._resolver import Requirement, Resolution, resolve
from ._signing import PublisherKeyChanged, SignatureRefused, SigningPolicy, UnsignedRefused

__all__ = [
    "BUILTIN_SOURCE",
    "BuiltinSource",
    "Change",
    "DownloadCache",
    "Fetcher",
    "InstallError",
    "Installer",
    "IntegrityError",
    "Plan",
    "PluginInfo",
    "PublisherKeyChanged",
    "RegistryClient",
    "RegistryError",
    "Release",
    "RemoteFile",
    "Requirement",
    "Resolution",
    "ResolutionError",
    "SignatureRefused",
    "SigningPolicy",
    "UnknownPlugin",
    "UnsignedRefused",
    "default_cache_dir",
    "default_specifier",
    "plugin_sources",
    "registry_urls",
    "resolve",
]
