"""The p2phost registry: JSON API, Python simple index and web marketplace over one store.

``create_app(Store(DIR))`` is the ASGI application; :func:`serve` runs it under uvicorn.
"""

from ._app import create_app
from ._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RegistryError,
    StoreError,
    Unauthorized,
)
from ._migrations import SCHEMA_VERSION
from ._records import Actor, AuditEntry, FileRecord, PluginRecord, PublishResult, VersionRecord
from ._serve import READY_LINE, serve
from ._store import DEFAULT_MAX_UPLOAD, Store

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
    "NotFound",
    "PayloadTooLarge",
    "PluginRecord",
    "PublishResult",
    "RegistryError",
    "Store",
    "StoreError",
    "Unauthorized",
    "VersionRecord",
    "create_app",
    "serve",
]
