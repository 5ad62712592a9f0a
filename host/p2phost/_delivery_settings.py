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
from dataclasses import dataclass, field, fields
from typing import Any

from p2phost_sdk import Delivery, DeliveryError, DeliveryMode

from ._suggest import close_names

#: ``problem(table, key, message, fix)``: how the manifest reader collects a problem.
Problem = Callable[[str, str | None, str, str | None], None]

KEEP = ("newest", "oldest")
#: The keys of a ``[delivery.TOPIC]`` table: Delivery's fields, as TOML spells them.
_TOPIC_KEYWORDS = tuple(f.name.replace("_", "-") for f in fields(Delivery))
#: What a ``[delivery.TOPIC]`` table takes, for a fix (docs/ is not in the wheel).
_MODES = [f'"{m.value}"' for m in DeliveryMode]
_TOPIC_KEYS = (f"a [delivery.TOPIC] table takes mode = {', '.join(_MODES[:-1])} or "
               f"{_MODES[-1]}, immediate-retries and delayed-retries (whole numbers >= 0), "
               "retry-delay (seconds > 0) and retry-backoff (a factor >= 1)")


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
                close = close_names(exc.field, _TOPIC_KEYWORDS, 1, prefixes=False)
                problem(f"delivery.{key}", exc.field, str(exc).split(": ", 1)[1],
                        f"rename {exc.field} to {close[0]} in [delivery.{key}]" if close
                        and exc.field not in _TOPIC_KEYWORDS else _TOPIC_KEYS)
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
