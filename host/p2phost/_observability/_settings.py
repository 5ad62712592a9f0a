"""``[metrics]`` of p2phost.toml: where a node serves Prometheus metrics, and how many
peers and topics get labels of their own (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: problem(table, key, message, fix): how the manifest reader collects a bad value.
Problem = Callable[[str, str | None, str, str | None], None]


@dataclass(frozen=True)
class MetricsSettings:
    """The ``[metrics]`` table."""

    #: ``HOST:PORT`` of the /metrics endpoint; empty: no endpoint (counters still count).
    listen: str = ""
    #: Peers counted under their own peer id; later ones are folded into ``other``.
    peer_labels: int = 32
    #: Topics counted under their own name; later ones are folded into ``other``.
    topic_labels: int = 256
    #: The handler-duration and mailbox-wait histograms time about one message in this
    #: many per topic, at random (the first of each topic always); 1: every message.
    #: The message counters count every message whatever this is.
    timing_sample: int = 16

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split; raises ValueError when it is not ``HOST:PORT``."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{self.listen!r} is not HOST:PORT")
        return host.strip("[]"), int(port)


def read_metrics(table: dict[str, Any], problem: Problem) -> MetricsSettings:
    """Validate ``[metrics]``, reporting each bad key through ``problem``."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "listen":
            if isinstance(value, str):
                try:
                    _ = MetricsSettings(listen=value).host_port
                except ValueError as exc:
                    problem("metrics", key, str(exc), 'listen = "127.0.0.1:9464"')
                else:
                    values["listen"] = value
            else:
                problem("metrics", key, f"expected a string HOST:PORT, got {value!r}",
                        'listen = "127.0.0.1:9464"')
        elif key in ("peer-labels", "topic-labels", "timing-sample"):
            least = 1 if key == "timing-sample" else 0
            if isinstance(value, int) and not isinstance(value, bool) and value >= least:
                values[key.replace("-", "_")] = value
            else:
                problem("metrics", key, f"expected a number >= {least}, got {value!r}",
                        f"{key} = {16 if least else 32}")
        else:
            problem("metrics", key, "unknown key (known: listen, peer-labels, topic-labels, "
                    "timing-sample)", None)
    return MetricsSettings(**values)
