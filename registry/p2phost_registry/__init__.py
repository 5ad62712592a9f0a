"""The p2phost registry: JSON API, Python simple index and web marketplace over one store.

``create_app(Store(DIR))`` is the ASGI application; :func:`serve` runs it under uvicorn.
:func:`seed` publishes wheels (or builds plugin projects) straight into a store, as
``p2phost registry seed`` does; :func:`is_store` tells a store's directory from a typo.
"""

from ._app import create_app
from ._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    ListenFailed,
    NotFound,
    PayloadTooLarge,
    RegistryError,
    StoreError,
    Unauthorized,
)
from ._migrations import SCHEMA_VERSION
from ._records import Actor, AuditEntry, FileRecord, PluginRecord, PublishResult, VersionRecord
from ._seed import SeedResult, plugin_projects, seed
from ._serve import READY_LINE, serve
from ._store import DEFAULT_MAX_UPLOAD, Store, is_store

__all__ = [
    "DEFAULT_MAX_UPLOAD",
    "READY_LINE",
    "SCHEMA_VERSION",
    "Actor",
    "AuditEntry",
    "BadRequest",
    "Conflict",
    "FileRecord",
    "Forbidden",
    "ListenFailed",
    "NotFound",
    "PayloadTooLarge",
    "PluginRecord",
    "PublishResult",
    "RegistryError",
    "SeedResult",
    "Store",
    "StoreError",
    "Unauthorized",
    "VersionRecord",
    "create_app",
    "is_store",
    "plugin_projects",
    "seed",
    "serve",
]
