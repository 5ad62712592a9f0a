"""Delivery guarantees, per topic: the mode, the retry policy, and the handler's store.

An app declares how the messages of a topic it handles (or sends) must be delivered::

    class Orders(App):
        delivery = {"invoices": "at-least-once"}          # a topic it sends to

        @handler("orders", delivery=Delivery("effectively-once", immediate_retries=1))
        async def order(self, message):
            total = message.store.get("total", 0)         # committed with the message
            message.store.put("total", total + message.body["amount"])

``[delivery.TOPIC]`` in p2phost.toml overrides any of these per topic (docs/delivery.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

from ._errors import DeliveryError


class DeliveryMode(enum.StrEnum):
    """How hard the node tries to get a message of a topic to its handler."""

    #: Sent once; lost if the connection or the receiver fails first.
    AT_MOST_ONCE = "at-most-once"
    #: Kept by the sender until the receiver acknowledges it (after its handler
    #: succeeded), resent until then: never lost, possibly handled twice.
    AT_LEAST_ONCE = "at-least-once"
    #: At least once, and the receiver keeps the ids it took in a durable dedupe
    #: window: within the window each message reaches a successful handler once.
    EFFECTIVELY_ONCE = "effectively-once"


#: Keys of ``[delivery.TOPIC]`` in p2phost.toml -> fields of :class:`Delivery`.
SETTING_FIELDS = {
    "mode": "mode",
    "immediate-retries": "immediate_retries",
    "delayed-retries": "delayed_retries",
    "retry-delay": "retry_delay",
    "retry-backoff": "retry_backoff",
}


@dataclass(frozen=True)
class Delivery:
    """The delivery mode of one topic, and what the receiver does when its handler raises.

    A failing handler is retried ``immediate_retries`` times at once; if it still
    fails, the message is put aside and the whole round runs again after
    ``retry_delay`` seconds, growing by ``retry_backoff`` each time, up to
    ``delayed_retries`` rounds. Then the message goes to the dead-letter store. Retries
    apply to acknowledged modes only: an at-most-once handler that raises is logged.
    """

    #: A :class:`DeliveryMode` (a mode's name is turned into one).
    mode: DeliveryMode | str = DeliveryMode.AT_MOST_ONCE
    immediate_retries: int = 2
    delayed_retries: int = 2
    retry_delay: float = 1.0
    retry_backoff: float = 2.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", DeliveryMode(self.mode))
        except ValueError:
            raise DeliveryError("mode", f"{self.mode!r} is not a delivery mode (one of: "
                                f"{', '.join(m.value for m in DeliveryMode)})") from None
        for name in ("immediate_retries", "delayed_retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DeliveryError(name.replace("_", "-"),
                                    f"expected a whole number >= 0, got {value!r}")
        for name, least in (("retry_delay", 0.0), ("retry_backoff", 1.0)):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < least \
                    or (name == "retry_delay" and value == 0):
                bound = "> 0" if name == "retry_delay" else ">= 1"
                raise DeliveryError(name.replace("_", "-"),
                                    f"expected a number {bound}, got {value!r}")

    @classmethod
    def of(cls, value: Delivery | str) -> Delivery:
        """``value`` as a :class:`Delivery` (a mode name gets the default retry policy)."""
        return value if isinstance(value, Delivery) else cls(value)

    @property
    def acknowledged(self) -> bool:
        """Whether the receiver acknowledges messages (every mode but at-most-once)."""
        return self.mode is not DeliveryMode.AT_MOST_ONCE

    @property
    def attempts(self) -> int:
        """How many times the handler runs before the message is dead-lettered."""
        return (1 + self.immediate_retries) * (1 + self.delayed_retries)

    def delay(self, round_: int) -> float:
        """Seconds before delayed round ``round_`` (0 = the first)."""
        return float(self.retry_delay * self.retry_backoff ** round_)

    def with_settings(self, settings: Mapping[str, Any]) -> Delivery:
        """This policy with ``[delivery.TOPIC]`` keys applied; DeliveryError names a bad key."""
        changes: dict[str, Any] = {}
        for key, value in settings.items():
            name = SETTING_FIELDS.get(key)
            if name is None:
                raise DeliveryError(key, f"unknown key (known: {', '.join(SETTING_FIELDS)})")
            changes[name] = value
        return replace(self, **changes)


assert {f.name for f in fields(Delivery)} == set(SETTING_FIELDS.values())


class Store(Protocol):
    """An app's durable key-value state, as one acknowledged handler call sees it.

    Writes are kept aside while the handler runs and committed in one transaction with
    the message's acknowledgement (and, for effectively-once topics, its dedupe mark)
    once the handler returns; a handler that raises leaves no write behind. So state
    kept here changes exactly once per message, even when the node is killed at any
    point. Values are JSON data (None, bool, int, float, str, lists, dicts).
    """

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` (including this call's own writes), or ``default``."""
        ...

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` when the handler succeeds."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` when the handler succeeds."""
        ...
