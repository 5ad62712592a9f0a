"""Seeing a running node: Prometheus metrics (``_metrics``), handler and mailbox timings
(``_instrument``), connections as rows (``_links``), structured logs (``_logs``), the live
view's figures (``_rates``); docs/operations.md. Everything here reads the node's own
counters: the hot path only counts.

This face is what the manifest reader needs, and stays light: ``p2phost.toml`` is read by
every command, and prometheus-client is imported only by a node that serves metrics.
"""

from ._errors import MetricsError
from ._settings import MetricsSettings, read_metrics

__all__ = ["MetricsError", "MetricsSettings", "read_metrics"]
