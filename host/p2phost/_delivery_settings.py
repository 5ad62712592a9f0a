"""The ``[delivery]`` table of p2phost.toml: node-wide delivery settings and per-topic overrides.

```toml
[delivery]                      # every key optional
ack-timeout = 10.0              # seconds before an unacknowledged message is resent
dead-letter-limit = 10000       # dead letters kept at most
dead-letter-keep = "newest"     # or "oldest", when the store is full

[delivery.orders]               # one topic: any field of p2phost_sdk.Delivery
mode = "effectively-once"
immediate-retries = 2
```

The semantics are in docs/delivery.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from p2phost_sdk import Delivery, DeliveryError

#: ``problem(table, key, message, fix)``: how the manifest reader collects a problem.
Problem = Callable[[str, str | None, str, str | None], None]

KEEP = ("newest", "oldest")


@dataclass(frozen=True)
class DeliverySettings:
    """Node-wide delivery settings, and ``[delivery.TOPIC]`` overrides by topic."""

    #: Seconds a sender waits for an acknowledgement before it sends the message again.
    ack_timeout: float = 10.0
    #: Unacknowledged messages a sender has out per peer before it waits.
    window: int = 1000
    #: Seconds a receiver remembers the ids of effectively-once messages it took.
    dedupe_window: float = 7 * 24 * 3600.0
    #: Dead letters kept at most; beyond that ``dead_letter_keep`` decides.
    dead_letter_limit: int = 10_000
    #: "newest" drops the oldest dead letter for a new one; "oldest" drops the new one.
    dead_letter_keep: str = "newest"
    #: Validated ``[delivery.TOPIC]`` tables (manifest keys), by topic.
    topics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def policy(self, topic: str, declared: Delivery | None) -> Delivery:
        """The delivery of ``topic``: what an app declared, with the manifest's keys on top."""
        base = declared or Delivery()
        override = self.topics.get(topic)
        return base.with_settings(override) if override else base


# key -> (attribute, check, what the check wants)
_NUMBERS: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    "ack-timeout": ("ack_timeout", lambda v: v > 0, "a number of seconds > 0"),
    "window": ("window", lambda v: isinstance(v, int) and v > 0, "a whole number > 0"),
    "dedupe-window": ("dedupe_window", lambda v: v > 0, "a number of seconds > 0"),
    "dead-letter-limit": ("dead_letter_limit", lambda v: isinstance(v, int) and v > 0,
                          "a whole number > 0"),
}


def read_delivery(table: Mapping[str, Any], problem: Problem) -> DeliverySettings:
    """``[delivery]`` as settings; each problem is reported with its table and key."""
    values: dict[str, Any] = {}
    topics: dict[str, Mapping[str, Any]] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            try:
                Delivery().with_settings(value)
            except DeliveryError as exc:
                problem(f"delivery.{key}", exc.field, str(exc).split(": ", 1)[1],
                        "see docs/delivery.md for the keys of [delivery.TOPIC]")
                continue
            topics[key] = dict(value)
        elif key == "dead-letter-keep":
            if value in KEEP:
                values["dead_letter_keep"] = value
            else:
                problem("delivery", key, f"expected \"newest\" or \"oldest\", got {value!r}",
                        None)
        elif key in _NUMBERS:
            name, check, wanted = _NUMBERS[key]
            if isinstance(value, int | float) and not isinstance(value, bool) and check(value):
                values[name] = value
            else:
                problem("delivery", key, f"expected {wanted}, got {value!r}", None)
        else:
            known = ", ".join([*_NUMBERS, "dead-letter-keep"])
            problem("delivery", key, f"unknown key (known: {known}, or a [delivery.TOPIC] "
                    "table)", None)
    return DeliverySettings(**values, topics=topics)
