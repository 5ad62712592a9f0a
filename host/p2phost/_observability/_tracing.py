"""Whether a node traces, decided without importing OpenTelemetry.

Traces need the ``otel`` extra (``pip install 'p2phost[otel]'``) and an exporter named by
the standard ``OTEL_TRACES_EXPORTER`` variable (``console``, ``otlp`` with
opentelemetry-exporter-otlp installed, or p2phost's own ``jsonl``: one span per line in
``P2PHOST_TRACES_FILE``). Otherwise nothing imports opentelemetry and nothing is traced:
a node without the extra pays nothing (docs/operations.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._otel import Tracing

log = logging.getLogger("p2phost.node")
#: What a node's hello says when it reads trace contexts (docs/wire.md, 2.5).
HELLO_KEY = "trace"


def wanted() -> bool:
    """Whether the environment asks for traces and the extra is installed."""
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not exporters or exporters == "none":
        return False
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    # find_spec of a top-level name looks on sys.path without importing anything.
    try:
        installed = importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        installed = False
    if not installed:
        log.warning("OTEL_TRACES_EXPORTER is set but OpenTelemetry is not installed: no "
                    "traces (fix: pip install 'p2phost[otel]')")
        return False
    return True


def open_tracing(service: str) -> Tracing | None:
    """The node's tracing, or None when it does not trace."""
    if not wanted():
        return None
    from ._otel import Tracing, TracingError

    try:
        return Tracing(service)
    except TracingError as exc:
        log.warning("no traces: %s", exc)
        return None
