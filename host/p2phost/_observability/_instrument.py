"""Timing handlers and mailbox waits, by wrapping what the dispatcher calls (nothing is
added to the hot path of a node whose metrics are off)."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from p2phost_sdk import Message

from .._runtime.messaging._routes import Route, Work

#: Buckets for handler durations and mailbox waits: 100 µs to 10 s.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0)


class Timings:
    """The node's histograms: handler duration by topic, mailbox wait by app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handler = Histogram("p2phost_handler_duration_seconds",
                                 "How long a handler ran, by topic (failures included).",
                                 ["topic"], registry=registry, buckets=BUCKETS)
        self.wait = Histogram("p2phost_mailbox_wait_seconds",
                              "How long a message waited in its app's mailbox before its "
                              "handler started.", ["app"], registry=registry, buckets=BUCKETS)

    def instrument(self, routes: dict[str, Route]) -> None:
        """Time every route's handler and every mailbox's waits (before the node starts:
        acknowledged delivery takes its routes from the same table)."""
        boxes = {}
        for topic, route in routes.items():
            routes[topic] = replace(route, handler=self._timed(topic, route.handler))
            boxes[id(route.mailbox)] = route.mailbox
        for box in boxes.values():
            # The mailbox's process callback is the one seam that sees each item as it
            # leaves the queue; wrapping it keeps the mailbox itself unchanged.
            box._process = self._waited(box.name, box._process)

    def _timed(self, topic: str, handler: Callable[[Message], Awaitable[Any]]
               ) -> Callable[[Message], Awaitable[Any]]:
        observe = self.handler.labels(topic).observe

        @functools.wraps(handler)  # keeps what the handler decorator marked on it
        async def timed(message: Message) -> Any:
            start = time.perf_counter()
            try:
                return await handler(message)
            finally:
                observe(time.perf_counter() - start)

        return timed

    def _waited(self, app: str, process: Callable[[str, Work], Coroutine[Any, Any, None]]
                ) -> Callable[[str, Work], Coroutine[Any, Any, None]]:
        observe = self.wait.labels(app).observe

        async def waited(peer: str, item: Work) -> None:
            if item.message is not None:
                observe(time.monotonic() - item.queued)
            await process(peer, item)

        return waited

