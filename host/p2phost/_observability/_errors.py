"""Errors of observability (metrics, traces, the live view)::

    UserError (p2phost._errors)
    └── MetricsError     the /metrics endpoint cannot listen where [metrics] listen says
"""

from __future__ import annotations

from .._errors import UserError


class MetricsError(UserError):
    """The node cannot serve metrics on ``[metrics] listen``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, fix='pick a free HOST:PORT in [metrics] listen of '
                                      'p2phost.toml (port 0 picks one), or remove [metrics]')
