"""A node's Prometheus metrics: one registry per node, served on ``[metrics] listen``.

The counters are the node's own (``p2phost peers --stats`` shows the same figures): a
custom collector reads the node's snapshot when Prometheus scrapes, so counting costs
nothing more with metrics on. The snapshot is taken on the node's event loop (the
endpoint, ``_endpoint.py``, makes the response in a thread of its own), so it sees
consistent tables.
The metric names and their meaning are listed in docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .._runtime.messaging._stats import COUNTERS
from ._endpoint import MetricsEndpoint
from ._errors import MetricsError
from ._inboxes import InboxWatch
from ._instrument import Timings, timing_families
from ._settings import MetricsSettings

log = logging.getLogger("p2phost.node")
_SCRAPE_TIMEOUT = 5.0

#: Counter -> (metric name without ``_total``, help).
_MESSAGE_METRICS = {
    "sent": ("p2phost_messages_sent", "App messages and requests sent (first attempts)."),
    "resent": ("p2phost_messages_resent", "Acknowledged messages sent again (no ack yet)."),
    "received": ("p2phost_messages_received", "App messages and requests received."),
    "acked": ("p2phost_messages_acked", "Sent messages the peer acknowledged."),
    "handled": ("p2phost_messages_handled", "Messages whose handler returned."),
    "failed": ("p2phost_messages_failed", "Messages whose handler raised (at-most-once), or "
                                          "that failed for good (acknowledged)."),
    "retried": ("p2phost_messages_retried", "Handler runs repeated after a failure."),
    "dead_lettered": ("p2phost_messages_dead_lettered", "Messages put in the dead-letter "
                                                        "store."),
    "duplicates": ("p2phost_messages_duplicates", "Copies of acknowledged messages "
                                                  "recognised and dropped."),
    "bytes_sent": ("p2phost_message_bytes_sent", "Frame bytes of app messages sent."),
    "bytes_received": ("p2phost_message_bytes_received", "Body bytes of app messages "
                                                         "received."),
}
assert set(COUNTERS) - {"dropped"} <= set(_MESSAGE_METRICS)

#: What the collector asks the node for, on the node's loop.
Snapshot = Callable[[], Coroutine[Any, Any, dict[str, Any]]]


class NodeCollector(Collector):
    """Turns a node's snapshot (``Node.stats()`` and its discovery status) into metrics."""

    def __init__(self, snapshot: Snapshot, loop: asyncio.AbstractEventLoop) -> None:
        self._snapshot = snapshot
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        """Called by the HTTP server's thread at each scrape."""
        future = asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop)
        return iter(families(future.result(_SCRAPE_TIMEOUT)))


def families(data: dict[str, Any]) -> list[Metric]:
    """The metric families of one snapshot (a pure function: tested on its own)."""
    out: list[Metric] = []
    labels = ["topic", "peer"]
    counters = {key: CounterMetricFamily(name, text, labels=labels)
                for key, (name, text) in _MESSAGE_METRICS.items()}
    for peer, topics in data.get("by_peer", {}).items():
        for topic, values in topics.items():
            for key, value in values.items():
                if key in counters:
                    counters[key].add_metric([topic, peer], value)
    out.extend(counters.values())
    dropped = CounterMetricFamily("p2phost_messages_dropped", "Messages given up on, by "
                                  "reason (each is also logged).", labels=["topic", "reason"])
    for topic, reasons in data.get("drops", {}).items():
        for reason, count in reasons.items():
            dropped.add_metric([topic, reason], count)
    out.append(dropped)
    out.append(CounterMetricFamily("p2phost_unknown_acks", "Acknowledgements for messages "
                                   "this node was not waiting for (ignored).",
                                   value=data.get("unknown_acks", 0)))
    out.extend(_queues(data))
    out.extend(_connections(data))
    out.extend(_discovery(data.get("discovery", {})))
    out.extend(timing_families(data.get("timings", {})))
    out.extend(_inboxes(data.get("inboxes", {})))
    return out


def _inboxes(inboxes: dict[str, dict[str, Any]]) -> list[Metric]:
    records = GaugeMetricFamily("p2phost_inbox_records", "Records waiting in this node's "
                                "inbox on a broker or database (asked every 10 s).",
                                labels=["medium"])
    oldest = GaugeMetricFamily("p2phost_inbox_oldest_age_seconds", "Age of the oldest "
                               "record waiting in this node's inbox.", labels=["medium"])
    for medium, inbox in inboxes.items():
        if inbox.get("records") is not None:
            records.add_metric([medium], inbox["records"])
        if inbox.get("oldest_age") is not None:
            oldest.add_metric([medium], inbox["oldest_age"])
    return [records, oldest]


def _gauge(name: str, text: str, label: str, values: dict[str, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _queues(data: dict[str, Any]) -> list[Metric]:
    boxes = data.get("mailboxes", {})
    return [
        _gauge("p2phost_mailbox_depth", "Messages queued or being handled in an app's "
               "mailbox.", "app", {app: b.get("queued", 0) for app, b in boxes.items()}),
        _gauge("p2phost_mailbox_size", "An app's mailbox bound.", "app",
               {app: b.get("size", 0) for app, b in boxes.items()}),
        _gauge("p2phost_outbox_depth", "Acknowledged messages waiting for their ack.",
               "topic", data.get("outbox", {})),
        _gauge("p2phost_outbox_oldest_age_seconds", "Age of the oldest message in the "
               "outbox.", "topic", data.get("outbox_oldest", {})),
        _gauge("p2phost_delayed", "Received messages waiting for a delayed retry.", "topic",
               data.get("delayed", {})),
        _gauge("p2phost_dead_letters", "Messages in the dead-letter store.", "topic",
               data.get("dead", {})),
    ]


def _connections(data: dict[str, Any]) -> list[Metric]:
    links = data.get("connections", {})
    by_kind = GaugeMetricFamily("p2phost_connections", "Open connections to peers, by "
                                "transport and security.", labels=["transport", "security"])
    counts: dict[tuple[str, str], int] = {}
    for link in data.get("links", []):
        key = (link.get("transport", ""), link.get("security", ""))
        counts[key] = counts.get(key, 0) + 1
    for (transport, security), count in sorted(counts.items()):
        by_kind.add_metric([transport, security], count)
    failures = CounterMetricFamily("p2phost_handshake_failures", "Connections whose "
                                   "handshake failed, by side (accepted, dialled) and "
                                   "reason.", labels=["side", "reason"])
    for side, reasons in data.get("handshake_failures", {}).items():
        for reason, count in reasons.items():
            failures.add_metric([side, reason], count)
    return [
        by_kind, failures,
        GaugeMetricFamily("p2phost_peers", "Peers connected.", value=links.get("peers", 0)),
        GaugeMetricFamily("p2phost_clients", "Short-lived clients connected (p2phost send, "
                          "ping).", value=links.get("clients", 0)),
        GaugeMetricFamily("p2phost_handshakes_in_progress", "Accepted connections in their "
                          "handshake.", value=links.get("handshaking", 0)),
        CounterMetricFamily("p2phost_connections_refused", "Connections refused (peer "
                            "limit, handshake limits).",
                            value=links.get("refused", 0)),
    ]


def _discovery(status: dict[str, Any]) -> list[Metric]:
    events = CounterMetricFamily("p2phost_discovery_events", "Discovery plugins' counters "
                                 "(peers found, lost, refused...).", labels=["plugin", "event"])
    up = GaugeMetricFamily("p2phost_discovery_up", "1 when a discovery plugin works.",
                           labels=["plugin"])
    for plugin in status.get("plugins", []):
        name = str(plugin.get("name", ""))
        up.add_metric([name], 1 if plugin.get("state") == "up" else 0)
        for event, value in plugin.get("counters", {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                events.add_metric([name, str(event)], value)
    dials = CounterMetricFamily("p2phost_dial_events", "Dialling the peers discovery found.",
                                labels=["event"])
    for event, value in status.get("dialling", {}).items():
        if event != "targets" and isinstance(value, int):
            dials.add_metric([event], value)
    targets = GaugeMetricFamily("p2phost_dial_targets", "Peers the node keeps dialling.",
                                value=status.get("dialling", {}).get("targets", 0))
    return [events, up, dials, targets]


class NodeMetrics:
    """A node's registry (several nodes in one process each have their own), its
    histograms, and the /metrics endpoint while the node runs."""

    def __init__(self, settings: MetricsSettings, snapshot: Snapshot) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.timings = Timings(settings.timing_sample)
        #: Records waiting in the node's inboxes on brokers and databases.
        self.inboxes = InboxWatch()
        self._node_snapshot = snapshot
        self._endpoint: MetricsEndpoint | None = None
        #: The address the endpoint listens on (port 0 resolved), once started.
        self.address = ""

    async def start(self) -> None:
        """Register the collectors and listen on ``settings.listen``."""
        loop = asyncio.get_running_loop()
        self.registry.register(NodeCollector(self._snapshot, loop))
        ProcessCollector(registry=self.registry)
        host, port = self.settings.host_port
        endpoint = MetricsEndpoint(self.registry)
        try:
            bound = await endpoint.start(host, port)
        except OSError as exc:
            await endpoint.close()
            raise MetricsError(f"cannot serve metrics on {self.settings.listen}: "
                               f"{exc.strerror or exc}") from exc
        self._endpoint = endpoint
        self.address = f"{bound[0]}:{bound[1]}" if ":" not in bound[0] else \
            f"[{bound[0]}]:{bound[1]}"
        log.info("serving Prometheus metrics on http://%s/metrics", self.address)

    async def _snapshot(self) -> dict[str, Any]:
        return {**await self._node_snapshot(), "timings": self.timings.snapshot()}

    async def close(self) -> None:
        """Stop serving (a scrape in progress is answered or fails; nothing waits on it)."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await endpoint.close()
